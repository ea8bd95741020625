"""Every knob of the protocol, with the lesson's values as defaults (preprocessing apart).

A field declared with `knob(default, help, ...)` is also a command-line flag: python -m bench
builds its parser from this metadata (help, choices, metavar, argparse's type, nargs, const),
so a knob, its default and its help are written here once. Values are checked only in
`__post_init__`.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

# The Carpentries "Deep Learning Introduction" lesson, episode "Transfer learning".
LESSON_IMAGE_SIZE = 160

PREPROCESS_CHOICES = ("native", "lesson")
PROTOCOL_CHOICES = ("lesson", "holdout")
POOLING_CHOICES = ("max", "avg")
PROBE_CHOICES = ("linear", "knn")
RUNTIME_CHOICES = ("auto", "tensorflow", "openvino")


class ConfigError(ValueError):
    """A value a field cannot take; `name` is the field, so the CLI can name its flag."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name} {reason}")
        self.name = name
        self.reason = reason


# What a knob is to a run's identity (a knob's `identity`): PROTOCOL knobs make the protocol
# (tables of two protocols can hold the same experiment), TABLE knobs the rest of a leaderboard
# table's configuration, SEED tells the runs of one entry apart. A knob without one changes how
# fast or how verbosely a run is computed, never its numbers.
PROTOCOL, TABLE, SEED = "protocol", "table", "seed"


def knob(default: Any, help: str, *, choices: tuple[str, ...] | None = None,
         metavar: str | None = None, type: Callable[[str], Any] | None = None,
         identity: str | None = None, **argparse_kwargs: Any) -> Any:
    """A dataclass field that is also a flag: `help` and the rest go into its metadata.

    A bool field is a switch (`--name`, or `--no-name` when it defaults to True); `choices`
    are shown in the help, and checked in `__post_init__` only. `identity` (PROTOCOL, TABLE,
    SEED) says the knob changes the numbers: it is in the config hash, the log and the tables.
    """
    metadata = {"help": help, "choices": choices, "metavar": metavar, "type": type,
                "identity": identity, **argparse_kwargs}
    return field(default=default, metadata={k: v for k, v in metadata.items() if v is not None})


def size_or_word(text: str) -> int | str:
    """--image-size: an integer when the text is one, else the word (RunConfig says which)."""
    try:
        return int(text)
    except ValueError:
        return text


def _check_count(name: str, value: object, low: int, note: str = "") -> None:
    """An integer >= low: nan, inf or 2.5 given from Python would slip past the bound alone."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise ConfigError(name, f"must be an integer >= {low}{note}; received {value}")
    if value < low:
        raise ConfigError(name, f"must be >= {low}{note}; received {value}")


@dataclass(frozen=True)
class RunConfig:
    """The protocol one backbone is run under: the lesson's, but for each model's own
    preprocessing (`preprocess="native"`; "lesson" is the episode's pixels / 255)."""

    # lesson: early stopping watches the test file, as the episode (which flatters the score);
    # holdout: a stratified split of train drives early stopping, the test file is read once
    protocol: str = knob(
        "lesson", "lesson: early stopping watches the test file, as the episode; holdout: a "
        "stratified split of train drives early stopping (best weights restored) and the test "
        "file is evaluated once", choices=PROTOCOL_CHOICES, identity=PROTOCOL)
    val_fraction: float = knob(
        0.2, "holdout: share of each training class held out", metavar="F", identity=PROTOCOL)
    # lesson: resize_with_pad(x, 160, 160); "native" = the registry's size for each backbone
    image_size: int | str = knob(
        LESSON_IMAGE_SIZE, "square side images are resized to, or 'native' for each "
        "backbone's ImageNet size", metavar="N|native", type=size_or_word, identity=TABLE)
    # native: each model's own preprocess_input on 0-255 pixels (what its weights expect);
    # lesson: pixels / 255 for every model, as the episode code does (wrong for EfficientNet,
    # ConvNeXt and MobileNetV3, whose weights expect 0-255 input).
    preprocess: str = knob(
        "native", "native: each model's own preprocess_input on 0-255 pixels; lesson: "
        "pixels/255 for every model, as the episode", choices=PREPROCESS_CHOICES,
        identity=TABLE)
    pooling: str = knob(  # lesson: DenseNet121(include_top=False, pooling='max')
        "max", "global pooling of the backbone", choices=POOLING_CHOICES, identity=TABLE)
    end_to_end: bool = knob(
        False, "the episode's model.fit on the full model every epoch, instead of training the "
        "head on features computed once (same results, slower)", identity=TABLE)
    epochs: int = knob(30, "maximum epochs", metavar="N", identity=TABLE)  # lesson: fit(epochs=30)
    patience: int = knob(  # lesson: EarlyStopping(monitor='val_accuracy', patience=5)
        5, "early-stopping patience in epochs on the watched accuracy (Keras' val_accuracy: "
        "test_accuracy under --protocol lesson, holdout_accuracy under holdout); 0 turns it off",
        metavar="N", identity=TABLE)
    batch_size: int = knob(  # lesson: fit(batch_size=32)
        32, "head training batch size", metavar="N", identity=TABLE)
    # A second stage, off in the lesson (which trains the head only, because it is cheap): the
    # backbone unfrozen as Keras' transfer-learning guide does, every BatchNormalization layer
    # kept in inference mode (engine/finetune.py says why). Its rows form tables of their own;
    # the frozen stage's rows, features and hashes are the same with it as without it.
    fine_tune: bool = knob(
        False, "after the frozen stage, unfreeze the backbone (BatchNormalization stays in "
        "inference mode) and train the whole model on with Adam at --fine-tune-lr: a second "
        "row per run, in a table of its own", identity=TABLE)
    fine_tune_layers: int | None = knob(
        None, "fine-tune only the backbone's last N layers (default: all of them)",
        metavar="N", type=int, identity=TABLE)
    fine_tune_lr: float = knob(1e-5, "fine-tuning learning rate (Adam)", metavar="LR",
                               identity=TABLE)
    fine_tune_epochs: int = knob(10, "maximum fine-tuning epochs, with the same early stopping",
                                 metavar="N", identity=TABLE)
    # which runs are fine-tuned, not what they compute: not part of a run's identity
    fine_tune_top: int | None = knob(
        None, "fine-tune only the K best entries of each table's frozen stage (successive "
        "halving: the frozen sweep plus K fine-tunes); implies --fine-tune", metavar="K",
        type=int)
    augment: bool = knob(
        False, "random flips, small rotations and zooms of the training images (Keras "
        "preprocessing layers) where images are trained on: fine-tuning and --end-to-end",
        identity=TABLE)
    seed: int = knob(  # lesson: keras.utils.set_random_seed(2)
        2, "keras.utils.set_random_seed value", metavar="N", identity=SEED)
    seeds: int = knob(  # one extraction, K heads: mean ± sd says how much of a gap is the seed
        1, "train the head K times (seeds --seed, --seed+1, ...) on one feature extraction; the "
        "leaderboard shows mean ± sd", metavar="K")
    # the seed a random backbone is drawn with; None = seed. A K-seed run keeps it at the
    # first seed so all K heads share one backbone (and one feature extraction).
    backbone_seed: int | None = None
    weights: str = knob(
        "imagenet", "imagenet (Keras' download and cache), random (weights=None), or a weights "
        "file for a single backbone", metavar="imagenet|random|FILE")
    weights_dir: str | None = knob(
        None, "folder searched first for Keras' own ImageNet weights file names", metavar="DIR")
    # speed only. 16 measured fastest on two CPU cores (results/PERF.md): bigger batches spill
    # the activations out of the caches.
    extract_batch_size: int = knob(16, "inference batch for the frozen backbone", metavar="N")
    # speed only, and not in the config hash: the runtimes agree within 1e-5 of the features'
    # scale, so the features, and the cache, are the same whichever computes them
    runtime: str = knob(
        "auto", "where the frozen backbone runs: auto (on a CPU, the faster of TensorFlow and "
        "OpenVINO for each backbone, measured on a few batches and remembered; on a GPU, "
        "TensorFlow), tensorflow, or openvino (CPU, float32)", choices=RUNTIME_CHOICES,
        aliases=("--engine",))
    # extra accuracy columns from the same features; off in the lesson. Not in the config hash:
    # they add columns and leave the head's numbers alone.
    probes: tuple[str, ...] = knob(
        (), "also score the cached features with a linear (logistic regression) and/or a "
        "k-nearest-neighbour probe, each tuned by cross-validation on the training split",
        choices=PROBE_CHOICES, metavar="linear,knn")
    verbose: int = 1  # Keras progress bars: 0 silent, 1 bars, 2 one line per extraction
    # frozen-backbone features on disk, reused across seeds, epochs, patience
    cache: bool = knob(True, "do not reuse or store computed features (converted models, "
                       "OpenVINO's compiled-model cache and measured rates are kept: they do "
                       "not depend on the data)")
    cache_dir: str | None = knob(
        None, "cache folder: features, converted models, measured rates (default: "
        "$BENCH_CACHE_DIR or ~/.cache/bench/features)", metavar="DIR")

    def __post_init__(self) -> None:
        if self.image_size != "native" and (not isinstance(self.image_size, int)
                                            or self.image_size < 1):
            raise ConfigError("image_size", "must be a positive integer or 'native'; "
                              f"received {self.image_size!r}")
        for name, choices in (("pooling", POOLING_CHOICES), ("preprocess", PREPROCESS_CHOICES),
                              ("protocol", PROTOCOL_CHOICES), ("runtime", RUNTIME_CHOICES)):
            if getattr(self, name) not in choices:
                raise ConfigError(name, f"must be one of {', '.join(choices)}; "
                                  f"received {getattr(self, name)!r}")
        # written so that nan fails it too: nan makes every comparison False
        if not (isinstance(self.val_fraction, numbers.Real) and 0 < self.val_fraction < 1):
            raise ConfigError("val_fraction", "must be a number strictly between 0 and 1; "
                              f"received {self.val_fraction}")
        for name in ("batch_size", "epochs", "extract_batch_size", "seeds"):
            _check_count(name, getattr(self, name), 1)
        # the command line gives "linear,knn" and a config sent as JSON a list: one spelling
        names = self.probes.split(",") if isinstance(self.probes, str) else self.probes
        names = (n.strip() for n in names if n.strip())
        object.__setattr__(self, "probes", tuple(dict.fromkeys(names)))
        unknown = [n for n in self.probes if n not in PROBE_CHOICES]
        if unknown:
            raise ConfigError("probes", f"must be names among {', '.join(PROBE_CHOICES)}; "
                              f"received {unknown[0]!r}")
        _check_count("patience", self.patience, 0, " (0 turns early stopping off)")
        self._check_fine_tuning()

    def _check_fine_tuning(self) -> None:
        if self.fine_tune_top is not None:
            _check_count("fine_tune_top", self.fine_tune_top, 1)
            object.__setattr__(self, "fine_tune", True)  # --fine-tune-top K implies it
        _check_count("fine_tune_epochs", self.fine_tune_epochs, 0)
        if self.fine_tune_layers is not None:
            _check_count("fine_tune_layers", self.fine_tune_layers, 1)
        if not (isinstance(self.fine_tune_lr, numbers.Real) and 0 < self.fine_tune_lr < 1):
            raise ConfigError("fine_tune_lr", "must be a learning rate between 0 and 1; "
                              f"received {self.fine_tune_lr}")
        if self.fine_tune and self.end_to_end:
            raise ConfigError("fine_tune", "continues the cached route's frozen stage; it "
                              "does not combine with --end-to-end")
        if self.augment and not (self.fine_tune or self.end_to_end):
            raise ConfigError("augment", "applies where images are trained on (--fine-tune, "
                              "--end-to-end): the cached route trains the head on features "
                              "computed once, which cannot be augmented")

    def size_for(self, native_size: int) -> int:
        """The square side images are resized to for a backbone whose native size is given."""
        return native_size if self.image_size == "native" else int(self.image_size)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def effective_backbone_seed(self) -> int:
        return self.seed if self.backbone_seed is None else self.backbone_seed

    def knobs(self) -> dict:
        """The knobs that change a result (not how fast or how verbosely it is computed); the
        fine-tuning knobs only where there is fine-tuning, augmentation only where it is on,
        so that a frozen run is the same run with them as without them."""
        return {k: getattr(self, k) for k in IDENTITY_KNOBS if self._applies(k)}

    def configuration(self) -> dict:
        """knobs() but the seed: what the rows of one leaderboard table share."""
        return {k: getattr(self, k) for k in CONFIGURATION_KNOBS if self._applies(k)}

    def _applies(self, knob: str) -> bool:
        if knob in FINE_TUNE_KNOBS:
            return self.fine_tune
        return knob != "augment" or self.augment

    def frozen(self) -> RunConfig:
        """The frozen stage of a fine-tuning run: the same run without its second stage."""
        return replace(self, fine_tune=False, fine_tune_top=None, augment=False)

    def per_seed(self) -> list[RunConfig]:
        """One single-seed config per head seed; all share the first seed's backbone."""
        return [replace(self, seed=self.seed + i, seeds=1,
                        backbone_seed=self.effective_backbone_seed)
                for i in range(self.seeds)]


def _knobs_of(*roles: str) -> tuple[str, ...]:
    return tuple(f.name for f in fields(RunConfig) if f.metadata.get("identity") in roles)


# Declared once, above, by each knob's `identity`; in the order tables' titles say them.
IDENTITY_KNOBS = _knobs_of(PROTOCOL, TABLE, SEED)  # the config hash covers these
PROTOCOL_KNOBS = _knobs_of(PROTOCOL)
CONFIGURATION_KNOBS = _knobs_of(PROTOCOL, TABLE)  # one leaderboard table: all but the seed
FINE_TUNE_KNOBS = ("fine_tune", "fine_tune_layers", "fine_tune_lr", "fine_tune_epochs")
