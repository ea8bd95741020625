"""The sweep on a Ray cluster: one Ray task per (backbone, seed), rows streamed to the driver.

The driver stays the only writer of runs.jsonl: tasks return plain dicts, and run_sweep appends
them as they arrive. The data go to the object store once; every task reads the same arrays.
Ray is an optional extra (pip install -e .[ray]) and is imported only when a RayExecutor is used.
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import replace
from pathlib import Path

import backbones
import bench
from bench.config import RunConfig
from bench.console import captured_stderr, one_line
from bench.data import Dataset
from bench.executors.common import (
    OnStart,
    Task,
    child_pythonpath,
    with_source,
    worker_spec,
)
from bench.identity import failed_row
from bench.provenance import git_commit
from bench.result import RunResult

INSTALL_HINT = "--ray needs Ray: pip install -e .[ray] (or pip install 'ray>=2.40')"
# Passed from the driver's environment to every task, so workers see the same registry.
PASSED_ENV = ("BENCH_EXTRA_BACKBONES", "TF_CPP_MIN_LOG_LEVEL")
# A worker killed mid-task (OOM killer, preemption, a segfault) is retried once on another
# worker; a crash that recurs becomes the row's error instead of a loop.
MAX_RETRIES = 1
POLL_S = 1.0  # ray.wait timeout: how soon Ctrl-C is noticed while tasks run
# Workers' output (Keras, TensorFlow) stays in Ray's log files: the driver prints one line per
# row, as a local sweep does.
_QUIET = dict(log_to_driver=False, logging_level=logging.ERROR)


class ClusterError(ValueError):
    """Ray is missing, the cluster cannot be reached, or no node can run a task: one line."""


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ClusterError(INSTALL_HINT) from None
    return ray


class RayExecutor:
    """run_one as Ray tasks, one per (backbone, seed), on a cluster or a local Ray instance.

    Args:
        address: as ray.init takes it ("HOST:PORT", "auto", "ray://HOST:10001"); None starts a
            local Ray instance for this sweep and stops it at the end.
        gpus_per_task: None: 1 when the cluster has GPUs, else 0. Fractions share a GPU.
        cpus_per_task: None: 1.
        num_cpus: CPUs of a local instance (None: Ray counts them, container limits included).
        log: receives one line saying where the sweep runs.
    """

    def __init__(self, address: str | None = None, gpus_per_task: float | None = None,
                 cpus_per_task: float | None = None, num_cpus: int | None = None,
                 log: Callable[[str], None] | None = None):
        self.address = address or None
        self.gpus_per_task = gpus_per_task
        self.cpus_per_task = 1.0 if cpus_per_task is None else cpus_per_task
        self.num_cpus = num_cpus
        self.log = log
        self._ray = None
        self._started = False  # this executor called ray.init, so it shuts Ray down

    def connect(self) -> None:
        """Starts or joins Ray and checks that some node can run a task; ClusterError if not.

        A Ray this process had already initialised is used as it is, and left running.
        """
        if self._ray is not None:
            return
        if self.cpus_per_task <= 0:
            raise ClusterError(f"--cpus-per-task: expected a number > 0; received "
                               f"{self.cpus_per_task:g}")
        if self.address:
            _check_reachable(self.address)
        ray = _import_ray()
        if not ray.is_initialized():
            if self.address:
                self._join(ray)
            else:
                try:
                    start_local(self.num_cpus)
                except Exception as err:
                    ray.shutdown()  # whatever ray.init had set up before it failed
                    raise ClusterError(f"--ray: could not start a local Ray instance: "
                                       f"{_brief(err)}") from None
            self._started = True
        self._ray = ray
        try:
            self._check_resources()
        except ClusterError:
            self.close()
            raise

    def _join(self, ray) -> None:
        """ray.init on self.address; ClusterError with what went wrong, in one line."""
        # Ray's C++ client retries for ~20 s, one warning a second on stderr; what it said goes
        # into the one-line error instead.
        with captured_stderr() as said, token_auth_for(self.address):
            try:
                ray.init(address=self.address, runtime_env=job_runtime_env(), **_QUIET)
                return
            except Exception as err:
                failure = err
        ray.shutdown()  # whatever ray.init had set up before it failed
        raise ClusterError(_connect_error(self.address, failure, "".join(said))) from None

    def _check_resources(self) -> None:
        ray = self._ray
        total = ray.cluster_resources()
        if self.gpus_per_task is None:
            self.gpus_per_task = 1.0 if total.get("GPU", 0) > 0 else 0.0
        nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
        # Ray would queue a task no node can hold forever: say so now instead of hanging.
        for flag, key, asked in (("--cpus-per-task", "CPU", self.cpus_per_task),
                                 ("--gpus-per-task", "GPU", self.gpus_per_task)):
            largest = max((n.get(key, 0) for n in nodes), default=0)
            if asked > largest:
                raise ClusterError(f"{flag} {asked:g}: no node of the Ray cluster has that many "
                                   f"{key}s (the largest has {largest:g})")
        if self.log:
            where = (f"the cluster at {self.address}" if self.address
                     else "a local instance (stopped at the end)")
            self.log(f"Ray: {where}, {len(nodes)} node(s), {total.get('CPU', 0):g} CPUs, "
                     f"{total.get('GPU', 0):g} GPUs; each task asks for "
                     f"{self.cpus_per_task:g} CPU and {self.gpus_per_task:g} GPU")

    def close(self) -> None:
        """Shuts down a Ray instance this executor started; an external cluster keeps running."""
        if self._ray is not None and self._started:
            self._ray.shutdown()
            self._started = False
        self._ray = None

    def map(self, tasks: Sequence[Task], data: Dataset, data_checksum: str,
            on_start: OnStart | None = None) -> Iterator[list[RunResult]]:
        self.connect()
        ray = self._ray
        pending: dict = {}  # ObjectRef -> (spec, config, submitted at)
        try:
            if not tasks:
                return
            remote = ray.remote(_run_task)
            env = _env_vars(self.gpus_per_task)
            options = dict(num_cpus=self.cpus_per_task, num_gpus=self.gpus_per_task,
                           max_retries=MAX_RETRIES, retry_exceptions=False,
                           runtime_env={"env_vars": env})
            # Once into the object store; each task gets a reference, not a copy of the pixels.
            payload = ray.put(dict(
                train_images=data.train_images, train_labels=data.train_labels,
                test_images=data.test_images, test_labels=data.test_labels,
                class_names=list(data.class_names), source=data.source, notes=list(data.notes)))

            def submit(spec, config: RunConfig) -> None:
                ref = remote.options(name=f"{spec.name} seed {config.seed}", **options).remote(
                    spec.name, _for_workers(config).to_dict(), payload, data_checksum)
                pending[ref] = (spec, config, time.perf_counter())

            # The later seeds of a frozen backbone wait for its first, whose features they
            # then read from the feature cache instead of each extracting them again.
            held: dict[str, tuple] = {}
            for spec, configs in tasks:
                if on_start:
                    on_start(spec)
                first, later = (configs[:1], configs[1:]) if _shares_features(spec, configs[0]) \
                    else (configs, [])
                for config in first:
                    submit(spec, config)
                if later:
                    held[spec.name] = (spec, later)
            while pending:
                ready, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_S)
                for ref in ready:
                    spec, config, submitted = pending.pop(ref)
                    if spec.name in held:
                        for later in held.pop(spec.name)[1]:
                            submit(spec, later)
                    yield [self._row(ref, spec, config, data, data_checksum, submitted)]
        finally:
            # Ctrl-C, or the consumer stopped: nothing keeps running on the cluster.
            for ref in pending:
                ray.cancel(ref, force=True)
            self.close()

    def _row(self, ref, spec, config: RunConfig, data: Dataset, data_checksum: str,
             submitted: float) -> RunResult:
        ray = self._ray
        try:
            result = RunResult.from_dict(ray.get(ref))
        except ray.exceptions.RayError as err:
            return failed_row(spec, config, data, _failure(ray, err),
                              time.perf_counter() - submitted, data_checksum)
        if result.git_commit is None:  # the worker ran the driver's code (runtime_env py_modules)

            result = replace(result, git_commit=git_commit())
        return with_source(result, data)


def _run_task(backbone: str, config: dict, payload: dict, data_checksum: str) -> dict:
    """Runs in a Ray worker: one (backbone, seed), returned as a plain dict (the row, and the
    head's weights under head_weights)."""
    spec = worker_spec(backbone)
    from bench.engine.runner import run_one

    # The driver validated these arrays: rebuilt as they are, notes included, not re-normalised.
    data = Dataset(
        train_images=payload["train_images"], train_labels=payload["train_labels"],
        test_images=payload["test_images"], test_labels=payload["test_labels"],
        class_names=tuple(payload["class_names"]), source=payload["source"],
        notes=tuple(payload["notes"]),
    )
    result = run_one(spec, RunConfig(**config), data, data_checksum=data_checksum)
    # the head's weights travel as numpy arrays in Ray's object store; RunResult.from_dict on
    # the driver takes them back as the row's in-memory head_weights
    return {**result.to_dict(), "head_weights": result.head_weights}


def _for_workers(config: RunConfig) -> RunConfig:
    """Paths made absolute (a worker's directory is not the driver's); no progress bars."""

    def absolute(path: str | None) -> str | None:
        return str(Path(path).expanduser().resolve()) if path else path

    weights = config.weights if config.weights in ("imagenet", "random") \
        else absolute(config.weights)
    return replace(config, weights=weights, weights_dir=absolute(config.weights_dir),
                   cache_dir=absolute(config.cache_dir or os.environ.get("BENCH_CACHE_DIR")),
                   verbose=0)


def _shares_features(spec, config: RunConfig) -> bool:
    return (spec.kind != "baseline" and not config.end_to_end
            and config.cache)


def job_runtime_env() -> dict:
    """For ray.init: workers import the driver's own bench and backbones, uploaded by Ray, so a
    node needs only the dependencies (TensorFlow, Keras, Ray), not a checkout of bench."""
    return {"py_modules": [_package_dir(bench), _package_dir(backbones)]}


def start_local(num_cpus: int | None = None) -> None:
    """ray.init of a new Ray instance on this machine, whatever the machine says about others.

    Ray joins an existing cluster when RAY_ADDRESS is set or /tmp/ray/ray_current_cluster names
    one, and that file outlives a head killed without `ray stop`; address="local" ignores the
    file, and RAY_ADDRESS is hidden during the start so no process Ray spawns inherits it.
    """
    ray = _import_ray()
    with _hidden_env("RAY_ADDRESS"):
        ray.init(address="local", num_cpus=num_cpus, include_dashboard=False,
                 runtime_env=job_runtime_env(), **_QUIET)


@contextlib.contextmanager
def _hidden_env(name: str) -> Iterator[None]:
    value = os.environ.pop(name, None)
    try:
        yield
    finally:
        if value is not None:
            os.environ[name] = value


def _env_vars(gpus_per_task: float) -> dict[str, str]:
    """Each task's environment: the driver's registry extras, and modules importable as here
    (BENCH_EXTRA_BACKBONES names modules on the driver's path: the checkout and its directory).
    A Ray instance started by someone else, without job_runtime_env, still finds bench there.

    TensorFlow keeps its default thread pools (the node's cores), as in a local run: its results
    depend on the thread count, and a task's rows must equal a local run's on the same machine.
    """
    env = {name: os.environ[name] for name in PASSED_ENV if name in os.environ}
    env["PYTHONPATH"] = f"{child_pythonpath()}{os.pathsep}{os.getcwd()}"
    if gpus_per_task == 0:
        env["CUDA_VISIBLE_DEVICES"] = ""  # Ray leaves it alone for zero-GPU tasks
    elif gpus_per_task < 1:
        env["TF_FORCE_GPU_ALLOW_GROWTH"] = "true"  # tasks sharing a GPU share its memory
    return env


def _package_dir(module) -> str:
    return str(Path(module.__file__).resolve().parent)


def _check_reachable(address: str) -> None:
    """A HOST:PORT where nothing listens is an error now: ray.init would retry for minutes."""
    host, _, port = address.split("://")[-1].rpartition(":")
    if not host or not port.isdigit():  # "auto", or a form left to ray.init
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
    except OSError as err:
        raise ClusterError(f"--ray {address}: nothing answers there ({err.strerror or err}); "
                           f"is a Ray head running? (ray start --head --port {port} on "
                           f"{host})") from None


def is_local_host(address: str) -> bool:
    """The address's host is this machine: a loopback IP literal (127.0.0.0/8, ::1) or exactly
    localhost. Anything else, 127.evil.example.com included, is a remote host."""
    host = address.split("://")[-1].rpartition(":")[0].strip("[]")
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a name: whatever it resolves to, it is not ours to vouch for
        return False


@contextlib.contextmanager
def token_auth_for(address: str) -> Iterator[None]:
    """RAY_AUTH_MODE=token while ray.init joins a head on this machine, then as it was.

    A head started on this machine by this user turns token auth on when ~/.ray/auth_token
    exists (Ray 2.60 writes it with any local instance), but Ray sends the token to an
    explicit address only under RAY_AUTH_MODE=token, as `ray start` and address="auto" would.
    A remote host never gets this user's token unasked, and an explicit setting is kept. The
    variable is restored after ray.init, so processes started later do not inherit it.
    """
    if not (is_local_host(address) and "RAY_AUTH_MODE" not in os.environ
            and (Path.home() / ".ray" / "auth_token").is_file()):
        yield
        return
    os.environ["RAY_AUTH_MODE"] = "token"
    try:
        _reload_ray_config()
        yield
    finally:
        del os.environ["RAY_AUTH_MODE"]


def _reload_ray_config() -> None:
    """Ray reads RAY_AUTH_MODE into its settings when imported; Ray's own switch to token auth
    re-reads them this way. The connection ray.init makes keeps the mode it was made with."""
    with contextlib.suppress(ImportError, AttributeError):
        from ray._raylet import Config

        Config.initialize("")


def _connect_error(address: str, err: Exception, stderr: str) -> str:
    if "InvalidAuthToken" in stderr or "Unauthenticated" in stderr:
        # Ray sends its token to an explicit address only when RAY_AUTH_MODE says so.
        mode = os.environ.get("RAY_AUTH_MODE")
        what = ("set RAY_AUTH_MODE=token here, with" if not mode else
                f"RAY_AUTH_MODE is {mode!r} but the token was refused: use")
        return (f"--ray {address}: the cluster wants token authentication: {what} the head's "
                f"token in ~/.ray/auth_token or $RAY_AUTH_TOKEN (ray get-auth-token prints it)")
    if "RuntimeEnv" in type(err).__name__:
        return f"--ray {address}: Ray could not hand bench's code to the cluster ({_brief(err)})"
    return (f"--ray {address}: could not connect to a Ray cluster there ({_brief(err)}); "
            f"is one running? (ray start --head --port PORT on that machine)")


def _failure(ray, err: Exception) -> str:
    """One line for the row of a task that returned no result."""
    exc = ray.exceptions
    if isinstance(err, exc.OutOfMemoryError):
        what = "was killed by Ray's memory monitor (the node ran out of memory)"
    elif isinstance(err, exc.WorkerCrashedError):
        what = "died during the run (a segfault, an out-of-memory kill or a killed process)"
    elif isinstance(err, exc.NodeDiedError):
        what = "was lost with its node"
    elif isinstance(err, exc.TaskCancelledError):
        what = "was cancelled"
    elif isinstance(err, exc.RayTaskError):
        cause = getattr(err, "cause", None)
        return f"Ray task failed: {_brief(cause) if cause else _brief(err)}"
    else:
        return f"Ray: {_brief(err)}"
    retried = ", also on its retry" if MAX_RETRIES and not isinstance(
        err, exc.TaskCancelledError) else ""
    return (f"the Ray worker process {what}{retried}; see the worker logs under "
            f"/tmp/ray/session_latest/logs on its node")


def _brief(err: BaseException) -> str:
    """The exception's type and the first line of its message (a Ray error's later lines are
    a traceback), at most 300 characters."""
    first = next((line for line in str(err).splitlines() if line.strip()), "")
    text = f"{type(err).__name__}: {one_line(first)}" if first else type(err).__name__
    return text if len(text) <= 300 else text[:297] + "..."
