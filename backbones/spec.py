"""The row types of the registry: what every selectable model declares, and a backbone's facts."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from backbones.weights_files import no_top_file

if TYPE_CHECKING:
    import keras

Kind = Literal["backbone", "baseline"]


class FrozenKwargs(Mapping[str, Any]):
    """A read-only, hashable, picklable mapping of constructor keyword arguments.

    ``types.MappingProxyType`` is neither hashable nor picklable, which would break the
    frozen dataclass's ``__hash__`` as well as ``copy.deepcopy``/``dataclasses.asdict``.
    """

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Any] | None = None) -> None:
        object.__setattr__(self, "_items", tuple(sorted(dict(items or {}).items())))

    def __setattr__(self, name: str, value: Any) -> None:
        raise AttributeError("FrozenKwargs is read-only")

    def __getitem__(self, key: str) -> Any:
        for k, v in self._items:
            if k == key:
                return v
        raise KeyError(key)

    def __iter__(self) -> Iterator[str]:
        return (k for k, _ in self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(self._items)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, Mapping):
            return dict(self._items) == dict(other)
        return NotImplemented

    def __reduce__(self):
        return (FrozenKwargs, (dict(self._items),))

    def __repr__(self) -> str:
        return f"FrozenKwargs({dict(self._items)!r})"


@dataclass(frozen=True, kw_only=True)
class Spec:
    """What every selectable row declares, backbone or baseline: what a sweep and a
    leaderboard read without knowing which it is."""

    name: str  # what --backbones selects it by (case-insensitive)
    family: str  # its keras.applications module ("densenet", ...) or "baseline"
    kind: Kind  # "backbone": frozen pretrained features; "baseline": trained from scratch
    canonical: bool  # one of the keras.applications constructors (what --all runs)
    top1: float | None  # ImageNet top-1 (%) as Keras publishes it; None when it has none
    min_size: int  # smallest input side it accepts


@dataclass(frozen=True, kw_only=True)
class BackboneSpec(Spec):
    """One keras.applications backbone (or width variant) and the facts a sweep needs."""

    kind: Kind = field(default="backbone", init=False)
    canonical: bool = True
    constructor_name: str  # attribute of keras.applications
    input_size: int  # side the ImageNet weights were trained at
    preprocess_mode: str  # "caffe" | "tf" | "torch" | "in-graph"
    feature_width: int  # channels of the pooled no-top output
    params: int  # parameters of the no-top backbone
    kwargs: Mapping[str, Any] = field(default_factory=FrozenKwargs)
    weight_sizes: tuple[int, ...] | None = None  # sides with their own no-top file
    constraints: str = ""
    # A custom constructor taking keras.applications' arguments, for rows added through
    # $BENCH_EXTRA_BACKBONES; None means keras.applications.<constructor_name>.
    factory: Callable[..., keras.Model] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        # Accept a plain dict from callers but never keep a mutable one.
        if not isinstance(self.kwargs, FrozenKwargs):
            object.__setattr__(self, "kwargs", FrozenKwargs(self.kwargs))

    @property
    def constructor(self) -> Callable[..., keras.Model]:
        """The keras.applications constructor (or the row's own factory)."""
        if self.factory is not None:
            return self.factory
        import keras  # only when a model is built: listing and selecting stay TensorFlow-free

        return getattr(keras.applications, self.constructor_name)

    @property
    def preprocess_input(self) -> Callable:
        """The family's ``preprocess_input`` (identity for in-graph families)."""
        import keras

        return getattr(keras.applications, self.family).preprocess_input

    def weights_side(self, size: int) -> int:
        """The side whose ImageNet file Keras loads for an input of ``size``."""
        if self.weight_sizes is None:
            return self.input_size
        # MobileNet/V2 fall back to their 224 file for any side they have no file for.
        return size if size in self.weight_sizes else 224

    def weights_file(self, size: int) -> str:
        """Keras' own file name for the include_top=False ImageNet weights at ``size``."""
        return self._file_at(self.weights_side(size))

    def weights_candidates(self, size: int) -> list[str]:
        """File names to look for in a local weights folder, best first.

        Per-resolution families list every resolution by distance from ``size`` (ties:
        the larger side first), so the exact file comes first when there is one.
        """
        if self.weight_sizes is None:
            return [self.weights_file(size)]
        ordered = sorted(self.weight_sizes, key=lambda s: (abs(s - size), -s))
        return [self._file_at(side) for side in ordered]

    def _file_at(self, side: int) -> str:
        return no_top_file(self.family, self.constructor_name, self.kwargs, side)

    def check_size(self, size: int) -> None:
        """ValueError when Keras would refuse a ``size`` x ``size`` input."""
        if size < self.min_size:
            raise ValueError(f"{self.name} needs an input of at least {self.min_size}x"
                             f"{self.min_size}; received {size}x{size}")

    def build(self, size: int, pooling: str | None = "max",
              weights: str | None = None) -> keras.Model:
        """The no-top backbone at ``size`` x ``size``; ``weights`` goes to Keras verbatim."""
        self.check_size(size)
        return self.constructor(include_top=False, weights=weights, input_shape=(size, size, 3),
                                pooling=pooling, **self.kwargs)
