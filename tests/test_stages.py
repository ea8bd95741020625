"""bench.report.stages: a fine-tuned entry's gain over its frozen stage and the rank agreement
of the two stages, against simulated tables whose truth is known, and the rules they replace
against the same tables, to show that each simulation fails a miscalibrated rule.

The simulated tables extend tests/test_resampling.py's with a second stage. Image i has a
difficulty u_i ~ N(0, 1) shared by every entry and stage. Seed k of entry e shifts its frozen
accuracy by s_ek ~ N(0, seed_sd) and its fine-tuned accuracy by a shift correlated SEED_CORR
with s_ek; the fine-tuned run's per-image noise shares SAME of the frozen run's (a fine-tuned
run continues the frozen one and keeps most of its answers). correct = 1{RHO u_i +
sqrt(1 - RHO^2) noise < Phi^-1(accuracy + shift)}: entry e's true accuracies over new images and
seeds are frozen_e and tuned_e, its true gain tuned_e - frozen_e, and the true rank agreement
Spearman's rho of (frozen, tuned) over the entries.

Monte-Carlo error: a rate r measured on R tables is allowed r <= 0.05 + 2 sqrt(0.05 0.95 / R).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import pytest
from scipy import stats as scipy_stats
from test_resampling import ALPHA, RHO, SIM_RESAMPLES, allowed_rate

from bench import resampling
from bench.report.stages import (
    MIN_SEEDS,
    agreement,
    gains,
    rank_correlations,
    resample_stages,
)

SAME = 0.9  # share of a fine-tuned run's per-image noise it keeps from its frozen stage
SEED_CORR = 0.5  # correlation of a seed's luck between the two stages
IMAGES = 293  # the CIFAR stand-in's test set
CONFIDENCE = 1 - ALPHA


def simulate(rng: np.random.Generator, frozen: list[float], tuned: list[float], n_seeds: int,
             seed_sd: float, n_images: int = IMAGES) -> tuple[np.ndarray, np.ndarray]:
    """(frozen, fine-tuned) correctness, each (entries, seeds, images)."""
    e = len(frozen)
    difficulty = rng.standard_normal(n_images)
    shift = rng.normal(0.0, seed_sd, (e, n_seeds))
    shift_tuned = SEED_CORR * shift + math.sqrt(1 - SEED_CORR**2) * rng.normal(
        0.0, seed_sd, (e, n_seeds))
    noise = rng.standard_normal((e, n_seeds, n_images))
    noise_tuned = SAME * noise + math.sqrt(1 - SAME**2) * rng.standard_normal(noise.shape)
    stages = []
    for accuracy, move, own in ((frozen, shift, noise), (tuned, shift_tuned, noise_tuned)):
        threshold = scipy_stats.norm.ppf(np.clip(np.asarray(accuracy)[:, None] + move,
                                                 1e-3, 1 - 1e-3))
        latent = RHO * difficulty + math.sqrt(1 - RHO**2) * own
        stages.append((latent < threshold[:, :, None]).astype(np.int8))
    return stages[0], stages[1]


def stages_table(frozen: np.ndarray, tuned: np.ndarray, rng_seed: int) -> resampling.Resampled:
    k = frozen.shape[1]
    return resample_stages(list(tuned), list(frozen), [range(k)] * len(frozen), SIM_RESAMPLES,
                           rng_seed)


# --- the gain -------------------------------------------------------------------------------

GAIN = 0.04
GAIN_TABLES = 300
GAIN_GRID = [(k, seed_sd) for k in (3, 5) for seed_sd in (0.0, 0.02)]


def image_only_t(frozen: np.ndarray, tuned: np.ndarray) -> tuple[float, float]:
    """The paired interval that forgets the seeds: a t interval over the images of each image's
    gain averaged over the seeds."""
    per_image = (tuned - frozen).mean(axis=0)
    half = scipy_stats.t.ppf(1 - ALPHA / 2, per_image.size - 1) * per_image.std(ddof=1)
    half /= math.sqrt(per_image.size)
    return per_image.mean() - half, per_image.mean() + half


@functools.cache
def gain_coverage(n_seeds: int, seed_sd: float) -> dict[str, float]:
    """How often the stages' gain interval, and the image-only one, cover the true gain."""
    rng = np.random.default_rng([3, n_seeds, round(seed_sd * 1000)])
    new = old = 0
    for r in range(GAIN_TABLES):
        frozen, tuned = simulate(rng, [0.6], [0.6 + GAIN], n_seeds, seed_sd)
        (found,) = gains(stages_table(frozen, tuned, r), CONFIDENCE)
        new += found.low <= GAIN <= found.high
        low, high = image_only_t(frozen[0], tuned[0])
        old += low <= GAIN <= high
    return {"new": new / GAIN_TABLES, "old": old / GAIN_TABLES}


@pytest.mark.parametrize("n_seeds, seed_sd", GAIN_GRID,
                         ids=[f"K={k}-seed_sd={sd}" for k, sd in GAIN_GRID])
def test_gain_interval_covers_the_true_gain(n_seeds: int, seed_sd: float) -> None:
    """Conservative (measured 0.99-1.00): the two stages' seed parts are drawn as if
    independent, though a fine-tuned run continues its frozen one."""
    coverage = gain_coverage(n_seeds, seed_sd)["new"]
    assert coverage >= 0.93, coverage


def test_image_only_gain_interval_misses_the_seeds() -> None:
    """The same simulation fails a paired interval blind to the seeds' spread."""
    coverage = gain_coverage(3, 0.02)["old"]
    assert coverage < 0.93, coverage


# --- the rank agreement ---------------------------------------------------------------------

AGREEMENT_TABLES = 200
# (frozen, fine-tuned) true accuracies: entries apart by 2 points or more, whose true rho the
# interval must cover ...
SEPARATED = {
    "reordered": ([0.50, 0.52, 0.54, 0.56, 0.58], [0.55, 0.59, 0.57, 0.63, 0.61]),
    "same order": ([0.52, 0.54, 0.56, 0.58, 0.60], [0.56, 0.58, 0.60, 0.62, 0.64]),
    "reversed": ([0.52, 0.54, 0.56, 0.58, 0.60], [0.64, 0.62, 0.60, 0.58, 0.56]),
    "three": ([0.54, 0.56, 0.58], [0.62, 0.60, 0.58]),
    "ten in order": (list(np.linspace(0.45, 0.63, 10)), list(np.linspace(0.50, 0.68, 10))),
}
# ... and entries a point apart or tied, whose order these images cannot tell: the interval
# need not cover rho there, but it must not call its sign wrong
TIED = {
    "tied": ([0.56] * 5, [0.60] * 5),
    "reversed a point apart": ([0.55, 0.56, 0.57, 0.58, 0.59], [0.63, 0.62, 0.61, 0.60, 0.59]),
}
COVER_GRID = [(3, 0.02), (5, 0.0)]
SIGN_GRID = [(2, 0.02), (3, 0.02), (5, 0.0)]


def grid_ids(points: list[tuple[int, float]]) -> list[str]:
    return [f"K={k}-seed_sd={sd}" for k, sd in points]


def _rules(res: resampling.Resampled) -> dict[str, tuple[float, float]]:
    """The interval the report gives, and the basic and percentile intervals it spans."""
    found = agreement(res, CONFIDENCE)
    e = res.estimates.size // 2
    accuracy = res.estimates + res.replicates
    deviations = rank_correlations(accuracy[:, e:], accuracy[:, :e]) - found.rho
    return {
        "new": (found.low, found.high),
        "basic": resampling.basic_interval(found.rho, deviations, CONFIDENCE),
        "percentile": resampling.basic_interval(found.rho, -deviations, CONFIDENCE),
    }


@functools.cache
def agreement_rates(case: str, n_seeds: int, seed_sd: float) -> dict[str, float]:
    """Per rule: how often its interval covers the true rho, and how often it calls the
    sign wrongly (excludes 0 on the side the truth is not on; tied truth: either side)."""
    frozen_true, tuned_true = {**SEPARATED, **TIED}[case]
    truth = 0.0 if case == "tied" else float(scipy_stats.spearmanr(frozen_true, tuned_true)[0])
    rng = np.random.default_rng([5, n_seeds, len(case)])
    rates = dict.fromkeys([f"{r}_{m}" for r in ("new", "basic", "percentile")
                           for m in ("cover", "wrong")], 0.0)
    for r in range(AGREEMENT_TABLES):
        frozen, tuned = simulate(rng, frozen_true, tuned_true, n_seeds, seed_sd)
        for rule, (low, high) in _rules(stages_table(frozen, tuned, r)).items():
            rates[f"{rule}_cover"] += (low <= truth <= high) / AGREEMENT_TABLES
            rates[f"{rule}_wrong"] += ((low > 0 and truth <= 0) or (high < 0 and truth >= 0)
                                       ) / AGREEMENT_TABLES
    return rates


@pytest.mark.parametrize("case", list(SEPARATED))
@pytest.mark.parametrize("n_seeds, seed_sd", COVER_GRID, ids=grid_ids(COVER_GRID))
def test_agreement_interval_covers_the_true_rho(case: str, n_seeds: int, seed_sd: float) -> None:
    rates = agreement_rates(case, n_seeds, seed_sd)
    assert rates["new_cover"] >= 0.93, rates


@pytest.mark.parametrize("case", list(TIED))
@pytest.mark.parametrize("n_seeds, seed_sd", SIGN_GRID, ids=grid_ids(SIGN_GRID))
def test_agreement_interval_never_calls_an_untold_order(case: str, n_seeds: int,
                                                        seed_sd: float) -> None:
    rates = agreement_rates(case, n_seeds, seed_sd)
    assert rates["new_wrong"] <= allowed_rate(AGREEMENT_TABLES), rates


def test_basic_interval_alone_calls_tied_entries_correlated() -> None:
    """Reflected about the estimate, the replicates' pull toward 0 becomes confidence."""
    rates = agreement_rates("tied", 3, 0.02)
    assert rates["basic_wrong"] > allowed_rate(AGREEMENT_TABLES), rates


def test_one_seed_would_read_its_luck_as_agreement() -> None:
    """Why the report needs MIN_SEEDS: with one seed, both stages carry that seed's luck on
    these images, no replicate draws it afresh, and tied entries look correlated."""
    rates = agreement_rates("tied", 1, 0.0)
    assert MIN_SEEDS == 2
    assert rates["new_wrong"] > allowed_rate(AGREEMENT_TABLES), rates


def test_percentile_interval_alone_misses_a_perfect_agreement() -> None:
    """Ten entries in the same order in truth: the replicates' ranks agree less than that."""
    rates = agreement_rates("ten in order", 3, 0.02)
    assert rates["percentile_cover"] < 0.93, rates


# --- units ------------------------------------------------------------------------------------


def test_rank_correlations_are_spearmans_rho_row_by_row() -> None:
    rng = np.random.default_rng(0)
    first = rng.integers(0, 4, size=(50, 6)).astype(float)  # ties on purpose
    second = rng.normal(size=(50, 6))
    first[0] = 1.0  # constant: rho undefined, taken as 0
    want = [0.0] + [scipy_stats.spearmanr(a, b)[0] for a, b in zip(first[1:], second[1:],
                                                                   strict=True)]
    np.testing.assert_allclose(rank_correlations(first, second), want, atol=1e-12)


def test_gains_and_agreement_read_the_stages_resampling() -> None:
    frozen, tuned = simulate(np.random.default_rng(1), [0.5, 0.6, 0.7], [0.6, 0.7, 0.8], 3, 0.01)
    res = stages_table(frozen, tuned, 0)
    found = gains(res, CONFIDENCE)
    for e, gain in enumerate(found):
        assert gain.estimate == pytest.approx(tuned[e].mean() - frozen[e].mean())
        assert gain == resampling.difference(res, e, 3 + e, CONFIDENCE)
    together = agreement(res, CONFIDENCE)
    want = scipy_stats.spearmanr(frozen.mean(axis=(1, 2)), tuned.mean(axis=(1, 2)))[0]
    assert together.backbones == 3 and together.rho == pytest.approx(want)
    assert -1 <= together.low <= together.rho <= together.high <= 1


def test_agreement_is_undefined_when_a_stage_is_constant() -> None:
    frozen, tuned = simulate(np.random.default_rng(2), [0.5, 0.6, 0.7], [0.6, 0.7, 0.8], 2, 0.0)
    frozen[:] = frozen[0]  # every entry's frozen stage right on the same images
    found = agreement(stages_table(frozen, tuned, 0), CONFIDENCE)
    assert found.rho is None and found.low is None and found.high is None
