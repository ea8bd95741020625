"""What the report says, in words a learner reads: tables' titles, verdicts, the recommendation
and what each statistic means. Plain text: the renderers add the markup.
"""

from __future__ import annotations

from collections.abc import Iterable

from bench.config import CONFIGURATION_KNOBS
from bench.report.entries import HOLDOUT, LESSON, Entry
from bench.report.ranking import (
    ALPHA,
    BEST,
    COULD_BE_BEST,
    NOT_COMPARED,
    POWER,
    RESAMPLES,
    WORSE,
    Recommendation,
    Table,
)
from bench.report.stages import MIN_BACKBONES, MIN_SEEDS, is_fine_tuned

MISSING = "—"  # how a missing value reads in the report's text

_TITLE_ORDER = (*CONFIGURATION_KNOBS, "data", "data_checksum")
_TITLE_ONLY_WHEN_DIFFERENT = {"data", "data_checksum"}  # said once above the tables otherwise

PROTOCOL_TEXT = {
    LESSON: (
        "As in the episode: early stopping watches the test file, and the accuracy is measured "
        "on that same file at the last epoch run, which flatters every number a little."
    ),
    HOLDOUT: (
        "Early stopping watches a stratified, seeded holdout split of the training set "
        "(`holdout_accuracy` in the details) and restores the best epoch's weights; the accuracy "
        "is the test file's, evaluated once at the end."
    ),
}


def points(fraction: float) -> str:
    """An accuracy difference in percentage points: 0.034 -> "3.4 points"."""
    return f"{100 * fraction:.1f} points"


def knob_text(name: str, value) -> str:
    """One knob of a configuration in words."""
    if name == "protocol":
        return f"{value} protocol"
    if name == "image_size":
        return "each backbone's native size" if value == "native" else f"{value} px"
    if name in ("preprocess", "pooling"):
        return f"{value} {'preprocessing' if name == 'preprocess' else 'pooling'}"
    if name == "end_to_end":
        return "end-to-end" if value else "cached features"
    if name == "batch_size":
        return f"batch {value}"
    if name == "data_checksum":
        return f"data {str(value)[:8]}" if value else f"data {MISSING}"
    if name == "fine_tune":
        return "fine-tuned" if value else "frozen"
    if name == "fine_tune_layers":
        return "every layer fine-tuned" if value is None else f"last {value} layers fine-tuned"
    if name == "augment":
        return "augmented" if value else "not augmented"
    return f"{name.replace('fine_tune_', 'fine-tune ').replace('_', ' ')} {value}"


def title_parts(configuration: dict, differing: Iterable[str] = ()) -> list[tuple[str, bool]]:
    """The configuration in words, knob by knob: (text, whether it tells tables apart)."""
    differing = set(differing)
    names = [k for k in _TITLE_ORDER if k in configuration]
    names += sorted(k for k in configuration if k not in _TITLE_ORDER)
    parts = []
    for name in names:
        if name == "val_fraction" and configuration.get("protocol") != HOLDOUT:
            continue
        if name in _TITLE_ONLY_WHEN_DIFFERENT and name not in differing:
            continue
        parts.append((knob_text(name, configuration[name]), name in differing))
    return parts


def title(table: Table) -> str:
    """The table's configuration as plain text."""
    return ", ".join(text for text, _ in title_parts(table.configuration, table.differing))


def label(entry: Entry) -> str:
    """The entry's name, marked when it is a control rather than a model to choose."""
    marks = []
    if entry.random_weights and "weights=random" not in entry.label:
        marks.append("random weights")
    if entry.one_class:
        marks.append("predicts one class")
    return f"{entry.label} ({', '.join(marks)})" if marks else entry.label


def verdict(entry: Entry) -> str:
    """The entry against the best of its table."""
    if entry.verdict == WORSE:
        return f"worse, by ≥ {points(entry.behind_at_least)}"
    return {BEST: "best", COULD_BE_BEST: "could be best"}.get(entry.verdict, NOT_COMPARED)


def _times(ratio: float | None, fewer: str, more: str) -> str | None:
    if ratio is None or abs(ratio - 1.0) < 0.05:
        return None
    return f"{ratio:.1f}× {fewer}" if ratio > 1 else f"{1 / ratio:.1f}× {more}"


def could_be_best_text(table: Table) -> str | None:
    """Which entries could be the best: the verdicts' summary."""
    if not table.tested:
        return None
    could = [label(e) for e in table.tested if e.verdict in (BEST, COULD_BE_BEST)]
    worse = sum(1 for e in table.tested if e.verdict == WORSE)
    if len(table.tested) == 1:
        alone = label(table.tested[0])
        if len(table.entries) == 1:
            return f"Only {alone} in this table: nothing to compare it with."
        return (f"Only {alone} could be compared: the others stored no predictions on these "
                "test images (`n/a`).")
    text = f"Could be best: {', '.join(could)}"
    if worse:
        text += f"; the {worse} other{'s are' if worse > 1 else ' is'} shown worse"
    return text + f" (all these claims hold together at {100 * (1 - ALPHA):.0f} %)."


def recommendation_text(found: Recommendation | None) -> str | None:
    """"Cheapest within 2 points of the best: Y — at most U points worse (95 %), N× faster per
    image, M× fewer parameters.", or why no cheaper entry qualifies."""
    if found is None:
        return None
    margin = points(found.margin)
    if found.cost is None:
        return "No entry records its inference time or size: no cheapest entry to recommend."
    chosen = found.chosen
    if chosen is not None and chosen is not found.best:
        gains = [_times(found.speedup, "faster per image", "slower per image"),
                 _times(found.param_ratio, "fewer parameters", "more parameters")]
        said = ", ".join(g for g in gains if g)
        return (f"Cheapest within {margin} of the best: {label(chosen)} — at most "
                f"{points(chosen.behind_at_most)} worse ({100 * (1 - ALPHA):.0f} %)"
                + (f", {said}." if said else "."))
    if chosen is found.best and found.cheaper == 0:
        by = "is faster per image" if found.cost == "infer_ms" else "has fewer parameters"
        return (f"Cheapest within {margin} of the best: {label(chosen)}, the best entry: no "
                f"entry compared with it {by}.")
    head = (f"No cheaper entry is shown within {margin} of the best"
            + (f" ({label(chosen)}, the best, is)." if chosen is not None else
               ", nor is any entry (the best included): too few images or seeds to bound a "
               "gap that closely."))
    if found.nearest is None:
        return head + " Every cheaper entry is observed more than that behind."
    needed = found.needed
    ways = []
    if needed is not None and needed.images is not None:
        ways.append(f"about {needed.images:,} test images")
    if needed is not None and needed.seeds is not None:
        ways.append(f"{needed.seeds} seeds per entry")
    if not ways:
        return head + f" {label(found.nearest)} is observed within it; no amount of data " \
            "this table could add would decide it."
    return (head + f" {label(found.nearest)} is observed within it; deciding needs "
            + " or ".join(ways) + ".")


def resolvable_text(table: Table) -> str | None:
    """What the table can tell apart, with its n and K."""
    if table.resolvable is None:
        return None
    seeds = sorted({len(e.runs) for e in table.tested})
    k = str(seeds[0]) if len(seeds) == 1 else f"{seeds[0]}–{seeds[-1]}"
    head = f"With n = {table.n_images} test images and K = {k} seeds, this table"
    if table.resolvable >= 0.5:
        return (f"{head} cannot tell entries apart with {100 * POWER:.0f} % power at any "
                f"realistic gap (it would take {points(table.resolvable)}): the seeds, or the "
                f"images, vary too much; more of them narrow it.")
    return (f"{head} tells two entries apart {100 * POWER:.0f} % of the time when their true "
            f"accuracies differ by {points(table.resolvable)}; smaller gaps may be real but "
            f"are not shown.")


def seed_warning(table: Table) -> str | None:
    """What the seeds could not tell: nothing with one seed, little with two."""
    if not table.resampled:
        return None
    if not table.seeds_estimated:
        return ("Seed variation is not estimated for entries run with one seed: their "
                "intervals cover the test images only, and a rerun may move them further "
                "(run --seeds 3 or more).")
    if min(table.resampled.n_seeds) < 3:
        return ("With 2 seeds, the spread between seeds is a guess from one difference "
                "(Student's t with 1 degree of freedom): the intervals are wide; 3 or more seeds "
                "narrow them.")
    return None


def method_text(table: Table) -> str:
    """How to read the table's statistics, in a learner's words."""
    watched = "" if table.protocol == HOLDOUT else (
        " (the episode's `val_accuracy`: early stopping watched it too)")
    return (
        f"How to read it: `test_accuracy` is the accuracy on the test file{watched}, averaged "
        f"over the test images and the K seeds, with its {100 * (1 - ALPHA):.0f} % interval: "
        f"the range a rerun on other images of the same kind, with other seeds, would land in. "
        f"`rank` adds the range of ranks over the same {RESAMPLES:,} resamples. `vs best`: an "
        f"entry is `worse` when, even allowing for which entry happened to come out on top, it "
        f"trails some entry by at least the stated amount; every other entry `could be best`. "
        f"Both come from one resampling of the test images and seeds, so an interval and a "
        f"verdict never disagree."
    )


STAGES_TEXT = (
    "Each fine-tuned run continues the frozen run of the same backbone and seed: its frozen "
    "stage, the head trained on frozen features as in a frozen table. `frozen_accuracy` is that "
    "stage's test accuracy (mean over seeds); `gain` is the fine-tuned minus the frozen "
    "accuracy, paired image by image and seed by seed, with its "
    f"{100 * (1 - ALPHA):.0f} % interval and p-value from one resampling of the test images "
    "and seeds: the interval excludes 0 exactly when p < 0.05. A gain whose interval includes "
    "0 is not shown in either direction, which is no evidence that fine-tuning changed nothing."
)


def agreement_text(table: Table) -> str:
    """Did the frozen ranking predict the fine-tuned one: Spearman's rho with its interval, and
    a yes only where the interval excludes 0."""
    compared = table.against_frozen.entries if table.against_frozen else []
    found = table.against_frozen.agreement if table.against_frozen else None
    if found is None and len(compared) >= MIN_BACKBONES:
        return (f"Omitted: it needs at least {MIN_SEEDS} seeds per backbone (run --seeds 3 or "
                "more). A fine-tuned run continues its frozen run with the same seed, so that "
                "seed's luck on these test images is in both stages and would read as agreement.")
    if found is None:
        fine_tuned = sum(1 for e in table.entries if is_fine_tuned(e))
        stored = (f" ({len(compared)} with their frozen stage's predictions)"
                  if len(compared) < fine_tuned else "")
        return (f"Omitted: a rank correlation needs at least {MIN_BACKBONES} fine-tuned "
                f"backbones with their frozen stage's predictions on these test images; this "
                f"table has {fine_tuned}{stored}.")
    if found.rho is None:
        return (f"Spearman's rho is undefined here (n = {found.backbones}): one stage's "
                "accuracies are all equal.")
    confidence = f"{100 * (1 - ALPHA):.0f} %"
    text = (f"Spearman's rank correlation between the frozen and the fine-tuned accuracies of "
            f"the {found.backbones} backbones: rho = {found.rho:.2f}, {confidence} interval "
            f"[{found.low:.2f}, {found.high:.2f}] (test images and seeds resampled, both "
            f"stages' accuracies recomputed in every replicate).")
    if found.low > 0:
        return text + (" The frozen ranking predicted the fine-tuned one: the interval "
                       "excludes 0, so a backbone ranked higher frozen tended to rank higher "
                       "fine-tuned. A correlation is not the same ranking: entries may still "
                       "change places, and the interval bounds how closely the two agree.")
    if found.high < 0:
        return text + (" The fine-tuned ranking ran against the frozen one: the interval "
                       "lies below 0, so a backbone ranked higher frozen tended to rank lower "
                       "fine-tuned.")
    return text + (" Not shown: the interval includes 0, so these runs cannot tell whether the "
                   "frozen ranking predicts the fine-tuned one, which is no evidence that it "
                   "does not. More test images, seeds or backbones narrow the interval.")
