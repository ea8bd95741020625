"""Test-only registry rows that misbehave in a child process (see BENCH_EXTRA_BACKBONES).

Each builds like a tiny MobileNet unless its failure fires first; the failures are the ones a
real sweep meets: a native crash, the out-of-memory killer, a hang.
"""

import os
import signal
import time

from backbones import BackboneSpec


def _segfault(**kwargs):
    os.kill(os.getpid(), signal.SIGSEGV)


def _oom_killed(**kwargs):
    os.kill(os.getpid(), signal.SIGKILL)


def _hang(**kwargs):
    time.sleep(3600)


def _tiny(**kwargs):
    import keras  # when a model is built: a driver that only selects rows stays Keras-free

    return keras.applications.MobileNet(alpha=0.25, **kwargs)


def _row(name, factory):
    return BackboneSpec(
        name=name, constructor_name="MobileNet", family="mobilenet", input_size=224,
        min_size=32, preprocess_mode="tf", feature_width=256, params=218_544, top1=None,
        canonical=False, factory=factory,
    )


BACKBONES = [
    _row("Test_segfault", _segfault),
    _row("Test_oom", _oom_killed),
    _row("Test_hang", _hang),
    _row("Test_tiny", _tiny),
]
