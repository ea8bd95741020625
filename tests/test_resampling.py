"""bench.resampling against simulated tables whose truth is known, and the rule bench used before
against the same tables, to show that each simulation fails a miscalibrated rule.

The simulated tables: image i has a difficulty u_i ~ N(0, 1) shared by every entry (so entries
err on the same images), seed k of entry e shifts its accuracy by s_ek ~ N(0, seed_sd), and
correct[e, k, i] = 1{rho u_i + sqrt(1 - rho^2) noise < Phi^-1(accuracy_e + s_ek)}: entry e's
true accuracy, over new images and new seeds, is accuracy_e.

Monte-Carlo error: a rate r measured on R tables is allowed r <= 0.05 + 2 sqrt(0.05 0.95 / R),
a one-sided bound a calibrated rule exceeds about 2 % of the time.
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from bench.resampling import (
    Resampled,
    could_be_best,
    difference,
    interval,
    needed,
    power_at,
    rank_intervals,
    resample,
    resolvable_difference,
    within_margin,
)

ALPHA = 0.05
RHO = 0.6  # how much of an image's difficulty the entries share
ACCURACY = 0.6
# the acceptance grid: seed sd and seeds K, ten equal entries on 293 images (a small test set)
GRID = [(seed_sd, k) for seed_sd in (0.0, 0.03, 0.08) for k in (3, 5)]
GRID_IMAGES = 293
GRID_ENTRIES = 10
# 300 tables per grid point puts the allowed rate at 7.5 %; 500 replicates put the 95 %
# critical value at the 25th largest of them, which moves the rate by under 1 point
GRID_TABLES = 300
SIM_RESAMPLES = 499


def allowed_rate(tables: int, alpha: float = ALPHA) -> float:
    return alpha + 2 * math.sqrt(alpha * (1 - alpha) / tables)


def simulate(
    rng: np.random.Generator,
    accuracies: list[float],
    n_seeds: int,
    n_images: int,
    seed_sd: float,
) -> np.ndarray:
    """Correctness (entries, seeds, images) of entries with these true accuracies."""
    difficulty = rng.standard_normal(n_images)
    shift = rng.normal(0.0, seed_sd, size=(len(accuracies), n_seeds)) if seed_sd else 0.0
    probability = np.clip(np.asarray(accuracies)[:, None] + shift, 1e-3, 1 - 1e-3)
    threshold = np.broadcast_to(scipy_stats.norm.ppf(probability), (len(accuracies), n_seeds))
    noise = rng.standard_normal((len(accuracies), n_seeds, n_images))
    latent = RHO * difficulty + math.sqrt(1 - RHO**2) * noise
    return (latent < threshold[:, :, None]).astype(np.int8)


def table(correct: np.ndarray, rng_seed: int, n_resamples: int = SIM_RESAMPLES) -> Resampled:
    """Every entry with seed labels 0..K-1, as a sweep over the same head seeds records them."""
    k = correct.shape[1]
    return resample(list(correct), [range(k)] * len(correct), n_resamples, rng_seed)


# --- the rule bench used before (bench/stats.py through bench/report/model.py) ----------------


def sign_test_p(fewer: np.ndarray, untied: np.ndarray) -> np.ndarray:
    """Two-sided exact sign test, scipy.stats.binomtest(fewer, untied).pvalue, for many at once:
    with p = 1/2 the two tails are mirror images."""
    return np.minimum(1.0, 2 * scipy_stats.binom.cdf(fewer, np.maximum(untied, 1), 0.5))


def old_sign_tests(correct: np.ndarray) -> tuple[int, list[tuple[int, float, bool]]]:
    """The top-ranked entry, and per other entry its Holm-adjusted p-value and whether the top
    won more images: an exact sign test over images on each image's correctness averaged over
    the seeds."""
    averaged = correct.mean(axis=1)  # (entries, images)
    top = int(np.argmax(averaged.mean(axis=1)))
    others = [e for e in range(len(averaged)) if e != top]
    wins = np.sum(averaged[top] > averaged[others], axis=1)
    untied = wins + np.sum(averaged[top] < averaged[others], axis=1)
    p = sign_test_p(np.minimum(wins, untied - wins), untied)
    top_better = (2 * wins > untied).tolist()
    order = np.argsort(p)
    stepped = np.maximum.accumulate(p[order] * (p.size - np.arange(p.size)))
    holm = np.empty(p.size)
    holm[order] = np.minimum(stepped, 1.0)
    return top, list(zip(others, holm.tolist(), top_better, strict=True))


def old_worse_than_top(correct: np.ndarray) -> bool:
    """Any entry called "worse" than the top-ranked one."""
    _, tests = old_sign_tests(correct)
    return any(adjusted < ALPHA and top_better for _, adjusted, top_better in tests)


def old_wilson(accuracy: float, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson interval on the n images, as if the seed-averaged accuracy were one binomial."""
    centre = accuracy + z * z / (2 * n)
    half = z * math.sqrt(accuracy * (1 - accuracy) / n + z * z / (4 * n * n))
    return (centre - half) / (1 + z * z / n), (centre + half) / (1 + z * z / n)


@functools.cache
def equal_entries(seed_sd: float, n_seeds: int) -> dict[str, float]:
    """Ten equally good entries: how often each rule calls one worse, how often intervals cover."""
    rng = np.random.default_rng([round(seed_sd * 1000), n_seeds])
    new_worse = old_worse = 0
    new_cover = old_cover = 0
    for r in range(GRID_TABLES):
        correct = simulate(rng, [ACCURACY] * GRID_ENTRIES, n_seeds, GRID_IMAGES, seed_sd)
        res = table(correct, rng_seed=r)
        new_worse += not all(verdict.could_be_best for verdict in could_be_best(res, ALPHA))
        old_worse += old_worse_than_top(correct)
        for e in range(GRID_ENTRIES):
            low, high = interval(res, e)
            new_cover += low <= ACCURACY <= high
            low, high = old_wilson(float(res.estimates[e]), GRID_IMAGES)
            old_cover += low <= ACCURACY <= high
    intervals = GRID_TABLES * GRID_ENTRIES
    return {
        "new_worse": new_worse / GRID_TABLES,
        "old_worse": old_worse / GRID_TABLES,
        "new_cover": new_cover / intervals,
        "old_cover": old_cover / intervals,
    }


def grid_ids(points: list[tuple[float, int]]) -> list[str]:
    return [f"seed_sd={seed_sd}-K={k}" for seed_sd, k in points]


@pytest.mark.parametrize("seed_sd, n_seeds", GRID, ids=grid_ids(GRID))
def test_equal_entries_are_rarely_called_worse(seed_sd: float, n_seeds: int) -> None:
    rate = equal_entries(seed_sd, n_seeds)["new_worse"]
    assert rate <= allowed_rate(GRID_TABLES), rate


@pytest.mark.parametrize("seed_sd, n_seeds", GRID, ids=grid_ids(GRID))
def test_intervals_cover_the_true_accuracy(seed_sd: float, n_seeds: int) -> None:
    coverage = equal_entries(seed_sd, n_seeds)["new_cover"]
    assert coverage >= 0.93, coverage


@pytest.mark.parametrize("seed_sd, n_seeds", GRID, ids=grid_ids(GRID))
def test_old_sign_test_calls_equal_entries_worse(seed_sd: float, n_seeds: int) -> None:
    """Blind to the seeds' spread, the old rule sees a seed's luck as a difference (62-99 %
    of tables at seed sd 0.03-0.08); and it tests against the top entry as if the top had not
    been chosen for looking best (9-15 % without any seed spread)."""
    rate = equal_entries(seed_sd, n_seeds)["old_worse"]
    assert rate > allowed_rate(GRID_TABLES), rate


@pytest.mark.parametrize("n_seeds", [3, 5])
def test_old_wilson_interval_misses_seed_variance(n_seeds: int) -> None:
    coverage = equal_entries(0.08, n_seeds)["old_cover"]
    assert coverage < 0.93, coverage


# --- power --------------------------------------------------------------------------------

POWER_TABLES = 400


@functools.cache
def six_point_gap(seed_sd: float) -> tuple[float, float]:
    """Two entries 6 points apart on 1,000 images, 3 seeds: the detection rate over simulated
    tables, and the mean power power_at states from each of them."""
    rng = np.random.default_rng([7, round(seed_sd * 1000)])
    detected = stated = 0.0
    for r in range(POWER_TABLES):
        correct = simulate(rng, [ACCURACY + 0.03, ACCURACY - 0.03], 3, 1000, seed_sd)
        res = table(correct, rng_seed=r)
        verdicts = could_be_best(res, ALPHA)
        detected += verdicts[0].could_be_best and not verdicts[1].could_be_best
        stated += power_at(res, 0.06, ALPHA)
    return detected / POWER_TABLES, stated / POWER_TABLES


@pytest.mark.parametrize("seed_sd", [0.0, 0.03])
def test_stated_power_is_the_detection_rate(seed_sd: float) -> None:
    detected, stated = six_point_gap(seed_sd)
    assert abs(detected - stated) <= 0.05, (detected, stated)


# --- the recommendation -------------------------------------------------------------------

MARGIN = 0.02
# cheapest first: two truly 5 and 3 points worse than the best, two 1 point worse, the best
COSTED = [0.57, 0.59, 0.61, 0.61, 0.62]
RECOMMENDATION_TABLES = 200


def old_recommendation(correct: np.ndarray) -> int:
    """The cheapest of the top-ranked entry and those "not distinguishable" from it."""
    top, tests = old_sign_tests(correct)
    return min([top, *(e for e, adjusted, _ in tests if adjusted >= ALPHA)])


@functools.cache
def recommendations(n_images: int, n_seeds: int, seed_sd: float) -> dict[str, float]:
    """How often each rule recommends an entry truly more than MARGIN behind the best."""
    rng = np.random.default_rng([11, n_images, n_seeds])
    gap = max(COSTED) - np.array(COSTED)
    new_bad = new_picked = old_bad = 0
    for r in range(RECOMMENDATION_TABLES):
        correct = simulate(rng, COSTED, n_seeds, n_images, seed_sd)
        within = [m.within for m in within_margin(table(correct, rng_seed=r), MARGIN, ALPHA)]
        if any(within):
            new_picked += 1
            new_bad += gap[within.index(True)] > MARGIN
        old_bad += gap[old_recommendation(correct)] > MARGIN
    return {
        "new_bad": new_bad / RECOMMENDATION_TABLES,
        "new_picked": new_picked / RECOMMENDATION_TABLES,
        "old_bad": old_bad / RECOMMENDATION_TABLES,
    }


def test_recommendation_is_within_the_margin() -> None:
    """3,000 images, 5 seeds: precise enough that the rule recommends in most tables."""
    found = recommendations(3000, 5, 0.005)
    assert found["new_picked"] >= 0.3, found  # else the rate below says nothing
    assert found["new_bad"] <= allowed_rate(RECOMMENDATION_TABLES), found


def test_old_recommendation_is_not() -> None:
    """293 images, 3 seeds: "not distinguishable" is read as "as good", and the new rule
    declines to recommend rather than recommend a worse entry."""
    found = recommendations(GRID_IMAGES, 3, 0.03)
    assert found["old_bad"] > allowed_rate(RECOMMENDATION_TABLES), found
    assert found["new_bad"] <= allowed_rate(RECOMMENDATION_TABLES), found


def test_sign_test_p_is_binomtest() -> None:
    fewer, untied = np.array([0, 3, 10, 25, 0]), np.array([5, 20, 20, 50, 0])
    want = [
        scipy_stats.binomtest(k, n).pvalue if n else 1.0 for k, n in zip(fewer, untied, strict=True)
    ]
    np.testing.assert_allclose(sign_test_p(fewer, untied), want, rtol=1e-12)


# --- units --------------------------------------------------------------------------------


def two_entries(
    accuracies: tuple[float, float] = (0.62, 0.58), n_seeds: int = 3, n_images: int = 400
) -> np.ndarray:
    return simulate(np.random.default_rng(0), list(accuracies), n_seeds, n_images, 0.01)


@pytest.mark.parametrize(
    "correct, seeds, message",
    [
        ([np.ones((2, 5)), np.ones((2, 6))], [[0, 1], [0, 1]], "same images"),
        ([np.full((2, 5), 0.5)], [[0, 1]], "0/1 correctness; received 0.5"),
        ([np.ones((0, 5))], [[]], "at least one seed"),
        ([np.ones(5)], [[0]], "at least one seed"),
        ([np.ones((2, 5))], [[0]], "2 distinct labels"),
        ([np.ones((2, 5))], [[1, 1]], "2 distinct labels"),
        ([np.ones((2, 5))], [[0, 1], [0, 1]], "one item per entry"),
        ([np.ones((1, 1))], [[0]], "at least 2 test images"),
    ],
)
def test_rejects_malformed_tables(correct, seeds, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        resample(correct, seeds, n_resamples=10)


def test_rejects_impossible_requests() -> None:
    res = table(two_entries(), rng_seed=0, n_resamples=30)
    with pytest.raises(ValueError, match="need n_resamples >= 39"):
        interval(res, 0, confidence=0.95)
    with pytest.raises(ValueError, match=r"confidence must lie in \(0, 1\)"):
        interval(res, 0, confidence=95)
    with pytest.raises(ValueError, match="entry 2 is not in a table of 2"):
        difference(res, 0, 2)
    with pytest.raises(ValueError, match="margin must be >= 0"):
        within_margin(res, -0.01)
    with pytest.raises(ValueError, match="must differ"):
        needed(res, 1, 1, margin=0.05)


def test_same_seed_same_replicates() -> None:
    correct = two_entries()
    first, again, other = table(correct, 3), table(correct, 3), table(correct, 4)
    np.testing.assert_array_equal(first.replicates, again.replicates)
    assert not np.array_equal(first.replicates, other.replicates)


def test_p_value_is_the_interval_inverted() -> None:
    res = table(two_entries((0.61, 0.59)), rng_seed=1, n_resamples=999)
    found = difference(res, 0, 1)
    assert 0 < found.p_value < 1
    for confidence in (0.5, 0.8, 0.9, 0.95, 0.99, 1 - found.p_value, 1 - found.p_value + 1e-4):
        if confidence >= 1 - 1 / 1000:
            continue
        at = difference(res, 0, 1, confidence)
        excludes_zero = at.low > 0 or at.high < 0
        assert excludes_zero == (found.p_value <= 1 - confidence + 1e-12), (confidence, at)


def test_clearly_better_entry_is_detected() -> None:
    res = table(two_entries((0.8, 0.5)), rng_seed=0)
    best, worse = could_be_best(res)
    assert best.could_be_best and best.behind_at_least == 0
    assert not worse.could_be_best and worse.behind_at_least > 0.1
    found = difference(res, 0, 1)
    assert found.low > 0.1 and 2 / (SIM_RESAMPLES + 1) <= found.p_value < ALPHA
    assert rank_intervals(res) == [(1, 1), (2, 2)]
    assert within_margin(res, MARGIN)[0].within and not within_margin(res, MARGIN)[1].within


def test_one_seed_is_flagged_and_gets_no_seed_part() -> None:
    correct = two_entries()
    res = resample([correct[0], correct[1][:1]], [[0, 1, 2], [0]], n_resamples=200)
    assert res.seed_variance_estimated == (True, False)
    assert res.n_seeds == (3, 1)
    np.testing.assert_array_equal(res.replicates[:, 1], res.image_replicates[:, 1])
    assert not np.array_equal(res.replicates[:, 0], res.image_replicates[:, 0])


def test_seeds_that_agree_leave_a_plain_image_bootstrap() -> None:
    """No seed-by-image noise to remove and no seed spread: the image bootstrap as it is."""
    row = two_entries()[0, 0]
    res = resample([np.stack([row, row, row])], [[0, 1, 2]], n_resamples=300)
    plain = resample([row[None]], [[0]], n_resamples=300)
    np.testing.assert_allclose(res.replicates, plain.replicates, atol=1e-12)


def test_power_and_resolvable_difference_invert() -> None:
    res = table(two_entries(), rng_seed=0)
    resolvable = resolvable_difference(res, power=0.8)
    assert resolvable > 0
    assert power_at(res, resolvable) == pytest.approx(0.8)
    assert power_at(res, 2 * resolvable) > 0.8 > power_at(res, resolvable / 2)


def test_needed_reproduces_the_current_bound() -> None:
    """At a margin equal to the pair's current bound, the data needed is the data there is."""
    res = table(two_entries((0.62, 0.60), n_images=1000), rng_seed=0)
    gap = float(res.estimates[0] - res.estimates[1])
    bound = within_margin(res, 1.0)[1].behind_at_most
    found = needed(res, 0, 1, margin=bound)
    assert found is not None
    assert found.images == pytest.approx(1000, abs=1) and found.seeds == pytest.approx(3, abs=1)
    more = needed(res, 0, 1, margin=gap + (bound - gap) / 2)
    assert more.images is None or more.images > 1000
    assert more.seeds is None or more.seeds > 3
    assert needed(res, 0, 1, margin=gap) is None
