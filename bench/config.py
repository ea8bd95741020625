"""Every knob of the protocol, with the lesson's values as defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

# The Carpentries "Deep Learning Introduction" lesson, episode "Transfer learning".
LESSON_IMAGE_SIZE = 160
DEFAULT_DATA_DIR = Path("data") / "dataset_dollarstreet"
DEFAULT_OUT_DIR = Path("results")

PREPROCESS_CHOICES = ("native", "lesson")
PROTOCOL_CHOICES = ("lesson", "holdout")
POOLING_CHOICES = ("max", "avg")


@dataclass(frozen=True)
class RunConfig:
    """The protocol one backbone is run under; defaults reproduce the lesson exactly."""

    # lesson: resize_with_pad(x, 160, 160); "native" = the registry's size for each backbone
    image_size: int | str = LESSON_IMAGE_SIZE
    pooling: str = "max"  # lesson: DenseNet121(include_top=False, pooling='max')
    batch_size: int = 32  # lesson: fit(batch_size=32)
    epochs: int = 30  # lesson: fit(epochs=30)
    patience: int = 5  # lesson: EarlyStopping(monitor='val_accuracy', patience=5); 0 = off
    seed: int = 2  # lesson: keras.utils.set_random_seed(2)
    seeds: int = 1  # train the head this many times (seed, seed+1, ...) on one extraction
    # the seed a random backbone is drawn with; None = seed. A K-seed run keeps it at the
    # first seed so all K heads share one backbone (and one feature extraction).
    backbone_seed: int | None = None
    # lesson: early stopping watches the test file, as the episode (which flatters the score);
    # holdout: a stratified split of train drives early stopping, the test file is read once
    protocol: str = "lesson"
    val_fraction: float = 0.2  # holdout: share of each training class held out
    # native: each model's own preprocess_input on 0-255 pixels (what its weights expect);
    # lesson: pixels / 255 for every model, as the episode code does (wrong for EfficientNet,
    # ConvNeXt and MobileNetV3, whose weights expect 0-255 input).
    preprocess: str = "native"
    end_to_end: bool = False  # the episode's model.fit on the full model instead of cached features
    weights: str = "imagenet"  # "imagenet", "random", or a path to a weights file
    weights_dir: str | None = None  # searched first for Keras' own weights file name
    # inference batch of the frozen backbone; speed only. 16 measured fastest on two CPU
    # cores (results/PERF.md): bigger batches spill the activations out of the caches.
    extract_batch_size: int = 16
    verbose: int = 1  # Keras progress bars: 0 silent, 1 bars, 2 one line per extraction
    cache: bool = True  # frozen-backbone features on disk, reused across seeds, epochs, patience
    cache_dir: str | None = None  # None: $BENCH_CACHE_DIR or ~/.cache/bench/features
    extra: dict = field(default_factory=dict, compare=False)  # free-form notes kept in each row

    def __post_init__(self) -> None:
        if self.image_size != "native":
            if not isinstance(self.image_size, int) or self.image_size < 1:
                raise ValueError(
                    "image_size must be a positive integer or 'native'; "
                    f"received {self.image_size!r}"
                )
        if self.pooling not in POOLING_CHOICES:
            raise ValueError(f"pooling must be one of {POOLING_CHOICES}; received {self.pooling!r}")
        if self.preprocess not in PREPROCESS_CHOICES:
            raise ValueError(
                f"preprocess must be one of {PREPROCESS_CHOICES}; received {self.preprocess!r}"
            )
        if self.protocol not in PROTOCOL_CHOICES:
            raise ValueError(f"protocol must be one of {PROTOCOL_CHOICES}; "
                             f"received {self.protocol!r}")
        if not 0 < self.val_fraction < 1:
            raise ValueError(f"val_fraction must be between 0 and 1; received {self.val_fraction}")
        for name in ("batch_size", "epochs", "extract_batch_size", "seeds"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1; received {getattr(self, name)}")
        if self.patience < 0:
            raise ValueError(f"patience must be >= 0 (0 turns early stopping off); "
                             f"received {self.patience}")

    def size_for(self, native_size: int) -> int:
        """The square side images are resized to for a backbone whose native size is given."""
        return native_size if self.image_size == "native" else int(self.image_size)

    def to_dict(self) -> dict:
        return asdict(self)

    @property
    def effective_backbone_seed(self) -> int:
        return self.seed if self.backbone_seed is None else self.backbone_seed

    def knobs(self) -> dict:
        """The knobs that change a result (not how fast or how verbosely it is computed)."""
        return {k: getattr(self, k) for k in PROTOCOL_FIELDS}

    def per_seed(self) -> list[RunConfig]:
        """One single-seed config per head seed; all share the first seed's backbone."""
        return [replace(self, seed=self.seed + i, seeds=1,
                        backbone_seed=self.effective_backbone_seed)
                for i in range(self.seeds)]


# What a config hash covers; extract_batch_size, verbose and the cache only change speed.
PROTOCOL_FIELDS = ("image_size", "pooling", "batch_size", "epochs", "patience", "seed",
                   "preprocess", "end_to_end", "protocol", "val_fraction")
