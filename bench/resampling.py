"""One resampling of a leaderboard table behind every interval, comparison, rank interval,
recommendation and power statement, so that an interval and its test can never disagree.

Statements are about what a rerun estimates, which draws new test images (of the same
population) and new seeds. An entry's estimate (mean over its K seeds and the n images) errs
in two independent ways, and each replicate draws both:

- images: one multinomial bootstrap of the n images per replicate, shared by every entry
  (they saw the same images: the comparison is paired image by image);
- seeds: S/sqrt(K) times Student's t with K - 1 degrees of freedom, S the sd of the seeds'
  accuracies on these images: resampling 3 values would understate their spread, and the t is
  the exact allowance for estimating it from K - 1 residuals. (This is the Gaussian wild
  bootstrap of the residuals, N(0, S^2/K), scaled by sqrt((K-1)/chi2_{K-1}), drawn directly.)

A replicate is a deviation of the estimate (basic bootstrap): an interval for a statistic T is
[T - upper quantile of its deviation, T - lower quantile].

Two changes from the first design, forced by tests/test_resampling.py (ten equal entries on
293 images; seed sd 0, 0.03, 0.08; K = 3 and 5; 300 tables each):

- Seeds are independent between entries, even where they share a seed label. One Gaussian
  weight per label, shared by the entries (with one chi-square draw per replicate), builds
  every entry's seed deviation from the same K weights: K - 1 dimensions where a rerun's span
  E - 1, so the maximum over pairs came out too small. 19 % and 15 % of tables called an equal
  entry worse at seed sd 0.08 (K = 3, 5), 14-52 % over the grid with the image part below;
  independent seeds: 0-3.3 %. Seeds that do agree across entries only widen an interval then.
- The image part leaves out the seed-by-image noise. Averaged over K seeds, an image's
  correctness still carries it (variance MS/K, MS the seed-by-image mean square), and so does
  each seed's accuracy in the seed part: counted twice, 95 % intervals covered 96-99 %, 0-1 %
  of tables called an equal entry worse, and a 6-point gap on 1,000 images was found in 72 %
  of tables, not 77 %. The per-image matrix is mapped linearly to the observed covariance less
  the noise, so the bootstrap stays one (B, n) count matrix times one (n, E) matrix.

Comparisons among many entries take the maximum over all ordered pairs of each pair's
deviation studentized by its bootstrap scale, and its (1 - alpha) quantile c, so that all the
claims of a table hold at once with probability >= 1 - alpha. The scale is half the 68 %
inter-quantile range: a t with 2 degrees of freedom has no variance, and its sample sd is ruled
by a few draws.

numpy and scipy only (no TensorFlow, pandas or matplotlib): the report builds tables with it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Cells per block of a (B, n) or (B, pairs) matrix: bounds memory to tens of MiB whatever the
# table's size, and keeps int32 image indices safe.
_BLOCK_CELLS = 1 << 22
# Half the distance between these quantiles is the sd of a normal deviation.
_SCALE_QUANTILES = (0.15865525393145707, 0.8413447460685429)  # scipy.stats.norm.cdf(-1), cdf(1)


@dataclass(frozen=True, eq=False)  # arrays: == would be ambiguous
class Resampled:
    """A table's accuracy estimates and B joint replicates of their deviations."""

    estimates: np.ndarray  # (E,) each entry's mean correctness over its seeds and the images
    replicates: np.ndarray  # (B, E) replicate deviation from the estimate, image + seed part
    image_replicates: np.ndarray  # (B, E) the image part alone; the rest is the seed part
    n_seeds: tuple[int, ...]  # K per entry
    n_images: int
    seed_variance_estimated: tuple[bool, ...]  # False where K = 1: the seed part is missing
    seed_labels: tuple[tuple[int, ...], ...]  # recorded only: seeds are not paired by label


@dataclass(frozen=True)
class Difference:
    """Accuracy of a minus accuracy of b, with its interval and the p-value that interval gives."""

    estimate: float
    low: float
    high: float
    p_value: float  # the smallest 1 - confidence whose interval excludes 0


@dataclass(frozen=True)
class Best:
    """One entry's verdict among all entries of its table, family-wise error <= alpha."""

    could_be_best: bool  # False: some entry is better, with every such claim of the table at once
    behind_at_least: float  # simultaneous lower bound of (best accuracy - this one), >= 0


@dataclass(frozen=True)
class Margin:
    """Whether an entry is within a margin of the best, all entries' claims at once."""

    behind_at_most: float  # U: simultaneous upper bound of (best accuracy - this one), >= 0
    within: bool  # U <= margin


@dataclass(frozen=True)
class Needed:
    """Data that would bring an entry within the margin; None where that route alone cannot."""

    images: int | None  # test images at the current seeds
    seeds: int | None  # seeds per entry at the current images


def _checked(
    correct: Sequence[np.ndarray], seeds: Sequence[Sequence[int]]
) -> tuple[list[np.ndarray], tuple[tuple[int, ...], ...]]:
    """The entries as float matrices and their seed labels; a ValueError names the first fault."""
    if len(correct) != len(seeds):
        raise ValueError(
            f"correct and seeds need one item per entry; received {len(correct)} and {len(seeds)}"
        )
    if len(correct) == 0:
        raise ValueError("need at least one entry; received none")
    matrices, labels = [], []
    for e, (matrix, entry_seeds) in enumerate(zip(correct, seeds, strict=True)):
        m = np.asarray(matrix)
        if m.ndim != 2 or m.shape[0] < 1:
            raise ValueError(
                f"correct[{e}] must be a (seeds, images) array with at least one seed; "
                f"received shape {m.shape}"
            )
        if m.shape[1] != np.shape(correct[0])[1]:
            raise ValueError(
                f"every entry must be scored on the same images; correct[0] has "
                f"{np.shape(correct[0])[1]} and correct[{e}] has {m.shape[1]}"
            )
        if m.dtype.kind not in "biuf":
            raise ValueError(f"correct[{e}] must hold 0/1 correctness; received dtype {m.dtype}")
        if (stray := m[(m != 0) & (m != 1)]).size:
            raise ValueError(f"correct[{e}] must hold 0/1 correctness; received {stray[0]}")
        entry_labels = tuple(int(s) for s in entry_seeds)
        if len(entry_labels) != m.shape[0] or len(set(entry_labels)) != len(entry_labels):
            raise ValueError(
                f"seeds[{e}] must give {m.shape[0]} distinct labels, one per row of "
                f"correct[{e}]; received {list(entry_labels)}"
            )
        matrices.append(m.astype(np.float64))
        labels.append(entry_labels)
    if matrices[0].shape[1] < 2:
        raise ValueError(f"need at least 2 test images; received {matrices[0].shape[1]}")
    return matrices, tuple(labels)


def _seed_image_noise(correct: np.ndarray) -> float:
    """Mean square of the seed-by-image residual: one seed's noise on one image."""
    k, n = correct.shape
    residual = (
        correct
        - correct.mean(axis=1, keepdims=True)
        - correct.mean(axis=0, keepdims=True)
        + correct.mean()
    )
    return float(np.sum(residual**2) / ((k - 1) * (n - 1)))


def _without_seed_noise(centred: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """centred (n, E) mapped linearly so its covariance loses noise on the diagonal.

    Through the SVD (centred = U S V'), sqrt(n) U V' has covariance the identity on the data's
    span; times (C - noise)^(1/2) it has covariance C - noise, with no inverse of C to blow up.
    """
    n = centred.shape[0]
    u, s, vt = np.linalg.svd(centred, full_matrices=False)
    keep = s > s.max(initial=0.0) * 1e-10
    if not keep.any():
        return centred
    target = centred.T @ centred / n - np.diag(noise)
    w, v = np.linalg.eigh((target + target.T) / 2)
    root = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    return math.sqrt(n) * (u[:, keep] @ vt[keep]) @ root


def _image_part(centred: np.ndarray, noise: np.ndarray, n_resamples: int, rng) -> np.ndarray:
    """(B, E): one multinomial draw of the n images per replicate, shared by the entries."""
    n = centred.shape[0]
    if np.any(noise > 0):
        centred = _without_seed_noise(centred, noise)
    image = np.empty((n_resamples, centred.shape[1]))
    block = max(1, _BLOCK_CELLS // n)
    for start in range(0, n_resamples, block):
        rows = min(block, n_resamples - start)
        # the draws as counts per image: integers + bincount is 5x numpy's multinomial
        drawn = rng.integers(0, n, size=(rows, n), dtype=np.int32)
        drawn += (np.arange(rows, dtype=np.int32) * n)[:, None]
        counts = np.bincount(drawn.ravel(), minlength=rows * n).reshape(rows, n)
        image[start : start + rows] = counts.astype(np.float64) @ centred / n
    return image


def resample(
    correct: Sequence[np.ndarray],
    seeds: Sequence[Sequence[int]],
    n_resamples: int = 4000,
    rng_seed: int = 0,
) -> Resampled:
    """Every entry's accuracy and B joint replicates of its deviation (see the module doc).

    Args:
        correct: per entry, its 0/1 correctness of shape (seeds, images); the same images, in
            the same order, for every entry.
        seeds: per entry, the labels of its seeds (its rows), checked and recorded.
    """
    matrices, labels = _checked(correct, seeds)
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be >= 1; received {n_resamples}")
    rng = np.random.default_rng(rng_seed)
    n_seeds = tuple(m.shape[0] for m in matrices)
    per_image = np.stack([m.mean(axis=0) for m in matrices], axis=1)  # (n, E)
    estimates = per_image.mean(axis=0)
    noise = np.array(
        [_seed_image_noise(m) / k if k > 1 else 0.0 for m, k in zip(matrices, n_seeds, strict=True)]
    )
    image = _image_part(per_image - estimates, noise, n_resamples, rng)
    seed = np.zeros_like(image)
    for e, (m, k) in enumerate(zip(matrices, n_seeds, strict=True)):
        if k > 1:
            spread = float(m.mean(axis=1).std(ddof=1))
            seed[:, e] = spread / math.sqrt(k) * rng.standard_t(k - 1, size=n_resamples)
    replicates = image + seed
    for array in (estimates, replicates, image):
        array.flags.writeable = False
    return Resampled(
        estimates=estimates,
        replicates=replicates,
        image_replicates=image,
        n_seeds=n_seeds,
        n_images=per_image.shape[0],
        seed_variance_estimated=tuple(k > 1 for k in n_seeds),
        seed_labels=labels,
    )


def _tail_count(tail: float, n_resamples: int) -> int:
    """How many replicates a tail of this probability holds: floor(tail (B + 1)).

    The k-th largest of B replicates is exceeded by a fresh one with probability k / (B + 1),
    the same rule the p-values count with, so intervals and p-values invert each other exactly.
    """
    k = math.floor(tail * (n_resamples + 1) + 1e-9)
    if k < 1:
        raise ValueError(
            f"{n_resamples} resamples cannot give a tail of {tail:g}; need n_resamples >= "
            f"{math.ceil(1 / tail) - 1}"
        )
    return k


def _probability(value: float, name: str) -> float:
    if not 0 < value < 1:
        raise ValueError(f"{name} must lie in (0, 1); received {value}")
    return value


def _entry(res: Resampled, e: int) -> int:
    if not 0 <= e < res.estimates.size:
        raise ValueError(f"entry {e} is not in a table of {res.estimates.size} entries")
    return e


def _basic(estimate: float, deviations: np.ndarray, confidence: float) -> tuple[float, float]:
    k = _tail_count((1 - _probability(confidence, "confidence")) / 2, deviations.size)
    ordered = np.sort(deviations)
    return estimate - float(ordered[-k]), estimate - float(ordered[k - 1])


def basic_interval(estimate: float, deviations: np.ndarray,
                   confidence: float = 0.95) -> tuple[float, float]:
    """Interval for any statistic of the accuracies, from its deviation on each replicate."""
    return _basic(estimate, np.asarray(deviations), confidence)


def interval(res: Resampled, e: int, confidence: float = 0.95) -> tuple[float, float]:
    """Interval for entry e's accuracy, clipped to [0, 1]."""
    low, high = _basic(float(res.estimates[_entry(res, e)]), res.replicates[:, e], confidence)
    return max(low, 0.0), min(high, 1.0)


def difference(res: Resampled, a: int, b: int, confidence: float = 0.95) -> Difference:
    """Accuracy of a minus accuracy of b (same images), its interval and two-sided p-value."""
    estimate = float(res.estimates[_entry(res, a)] - res.estimates[_entry(res, b)])
    deviations = res.replicates[:, a] - res.replicates[:, b]
    low, high = _basic(estimate, deviations, confidence)
    # The low end is above 0 when fewer than k replicates reach the estimate, k the tail count
    # of _tail_count; so the interval at confidence g excludes 0 exactly when p <= 1 - g.
    above = int(np.sum(deviations >= estimate))
    below = int(np.sum(deviations <= estimate))
    p = min(1.0, 2 * (min(above, below) + 1) / (deviations.size + 1))
    return Difference(estimate=estimate, low=max(low, -1.0), high=min(high, 1.0), p_value=p)


@dataclass(frozen=True)
class _Pairs:
    i: np.ndarray  # (P,) first entry of each unordered pair
    j: np.ndarray  # (P,) second entry
    gap: np.ndarray  # (P,) estimate of accuracy_j - accuracy_i
    scale: np.ndarray  # (P,) bootstrap scale of its deviation
    critical: float  # (1 - alpha) quantile of the max over ordered pairs of |deviation| / scale


def _scale(deviations: np.ndarray) -> np.ndarray:
    """Half the 68 % inter-quantile range per column (the sd of a normal); the sd where that
    range is 0 but the deviations are not (a few images or seeds decide everything)."""
    low, high = np.quantile(deviations, _SCALE_QUANTILES, axis=0)
    scale = (high - low) / 2
    return np.where(scale > 0, scale, deviations.std(axis=0))


def _pairs(res: Resampled, alpha: float) -> _Pairs:
    """Every pair's gap and scale, and the critical value of the max-statistic over them."""
    b, e = res.replicates.shape
    i, j = np.triu_indices(e, 1)
    k = _tail_count(_probability(alpha, "alpha"), b)
    scale = np.empty(i.size)
    largest = np.zeros(b)
    step = max(1, _BLOCK_CELLS // b)
    for start in range(0, i.size, step):
        part = slice(start, start + step)
        deviations = res.replicates[:, j[part]] - res.replicates[:, i[part]]
        scale[part] = _scale(deviations)
        # both directions of a pair at once: the max over ordered pairs of dev / scale
        with np.errstate(divide="ignore", invalid="ignore"):
            z = np.where(scale[part] > 0, np.abs(deviations) / scale[part], 0.0)
        if z.size:
            np.maximum(largest, z.max(axis=1), out=largest)
    critical = float(np.sort(largest)[-k])
    gap = res.estimates[j] - res.estimates[i]
    return _Pairs(i=i, j=j, gap=gap, scale=scale, critical=critical)


def could_be_best(res: Resampled, alpha: float = 0.05) -> list[Best]:
    """Which entries could be the best, the choice of the best accounted for.

    Entry i is worse than the best when some j has d_ji - c se_ji > 0; the probability that any
    such claim of the table is false is <= alpha. The others could be best: not "tied".
    """
    pairs = _pairs(res, alpha)
    behind = np.zeros(res.estimates.size)
    reach = pairs.critical * pairs.scale
    np.maximum.at(behind, pairs.i, pairs.gap - reach)  # i behind j
    np.maximum.at(behind, pairs.j, -pairs.gap - reach)  # j behind i
    return [Best(could_be_best=bool(x <= 0), behind_at_least=float(x)) for x in behind]


def within_margin(res: Resampled, margin: float, alpha: float = 0.05) -> list[Margin]:
    """Each entry's simultaneous upper bound U on its gap to the best, and whether U <= margin.

    The probability that any entry is declared within the margin while its true gap to the
    true best exceeds the margin is <= alpha: every bound holds at once with 1 - alpha.
    """
    if not margin >= 0:
        raise ValueError(f"margin must be >= 0 (an accuracy difference); received {margin}")
    pairs = _pairs(res, alpha)
    upper = np.zeros(res.estimates.size)
    reach = pairs.critical * pairs.scale
    np.maximum.at(upper, pairs.i, pairs.gap + reach)
    np.maximum.at(upper, pairs.j, -pairs.gap + reach)
    return [Margin(behind_at_most=float(u), within=bool(u <= margin)) for u in upper]


def rank_intervals(res: Resampled, confidence: float = 0.95) -> list[tuple[int, int]]:
    """Each entry's rank (1 = best, 1 + entries strictly better) as a percentile interval."""
    b, e = res.replicates.shape
    k = _tail_count((1 - _probability(confidence, "confidence")) / 2, b)
    ranks = np.empty((b, e), dtype=np.int64)
    step = max(1, _BLOCK_CELLS // (e * e))
    for start in range(0, b, step):
        accuracy = res.estimates + res.replicates[start : start + step]
        ranks[start : start + step] = 1 + (accuracy[:, None, :] > accuracy[:, :, None]).sum(axis=2)
    ordered = np.sort(ranks, axis=0)
    return [(int(lo), int(hi)) for lo, hi in zip(ordered[k - 1], ordered[-k], strict=True)]


def _typical(res: Resampled, alpha: float) -> tuple[float, float]:
    """The table's critical value and the median scale of its pairs."""
    if res.estimates.size < 2:
        raise ValueError(f"power needs at least 2 entries; received {res.estimates.size}")
    pairs = _pairs(res, alpha)
    return pairs.critical, float(np.median(pairs.scale))


def power_at(res: Resampled, difference: float, alpha: float = 0.05) -> float:
    """Probability that could_be_best calls the worse of two entries of this table worse when
    their true accuracies differ by `difference` (the table's multiplicity included).

    A rerun's gap as normal, with the table's typical pair scale (median over pairs), against
    its critical value, which holds the seeds' t tails. Simulated with 3 seeds on 1,000 images,
    a 6-point gap: stated 0.75, detected 0.77 without seed spread; stated 0.15, detected 0.11
    at seed sd 0.03. Where few seeds dominate, the table's own scale is a noisy guess of a
    rerun's, and the statement runs up to 5 points high.
    """
    critical, scale = _typical(res, alpha)
    if scale == 0:
        return 1.0 if difference > 0 else 0.0
    from scipy import stats as _scipy_stats  # costs half a second to import

    return float(_scipy_stats.norm.sf(critical - difference / scale))


def resolvable_difference(res: Resampled, power: float = 0.8, alpha: float = 0.05) -> float:
    """The smallest true difference between two entries detected with this power (power_at's
    inverse)."""
    _probability(power, "power")
    critical, scale = _typical(res, alpha)
    from scipy import stats as _scipy_stats

    return float(scale * (critical + _scipy_stats.norm.ppf(power)))


def needed(
    res: Resampled, e_best: int, e_candidate: int, margin: float, alpha: float = 0.05
) -> Needed | None:
    """Test images (at the current seeds) or seeds (at the current images) that would bring the
    candidate's bound on its gap to e_best within the margin, the observed gap kept.

    The pair's variance splits into an image part (shrinking as 1/n) and each entry's seed part
    (as 1/K). The critical value is held at its current value, though more seeds thin the t
    tails behind it, so the seed count errs high. Counts at or below the current ones mean
    the bound is within already. None when the observed gap is at or beyond the margin: more
    data narrows the bound around the gap, never below it.
    """
    if _entry(res, e_best) == _entry(res, e_candidate):
        raise ValueError(f"e_best and e_candidate must differ; received {e_best} twice")
    gap = float(res.estimates[e_best] - res.estimates[e_candidate])
    if gap >= margin:
        return None
    critical = _pairs(res, alpha).critical
    image = res.image_replicates[:, e_best] - res.image_replicates[:, e_candidate]
    seed = res.replicates[:, [e_best, e_candidate]] - res.image_replicates[:, [e_best, e_candidate]]
    total = float(_scale(image + seed[:, 0] - seed[:, 1])) ** 2
    parts = _scale(np.column_stack([image, seed])) ** 2
    if total == 0 or critical == 0 or parts.sum() == 0:  # nothing varies: within already
        return Needed(images=res.n_images, seeds=max(res.n_seeds[e_best], res.n_seeds[e_candidate]))
    # the pair's variance as the parts' shares of it: images (as 1/n), each entry's seeds (1/K)
    image_var, *seed_var = total * parts / parts.sum()
    allowed = ((margin - gap) / critical) ** 2  # the variance that keeps U <= margin
    seed_weight = seed_var[0] * res.n_seeds[e_best] + seed_var[1] * res.n_seeds[e_candidate]
    images = seeds = None
    if sum(seed_var) < allowed:
        images = max(2, math.ceil(res.n_images * image_var / (allowed - sum(seed_var))))
    if image_var < allowed and seed_weight > 0:
        seeds = max(2, math.ceil(seed_weight / (allowed - image_var)))
    return Needed(images=images, seeds=seeds)
