"""fp32 minus tathe4 against the budget: every compare result and every run pair the report reads, as points of
one series per host, device, precision and network.

A point is a mean over paired seeds: a compare result's comparison (its 95% interval as written by `q4bench
compare`), or run pairs found among the histories (fp32 and tathe4 of the same host, network, recipe, device,
precision, planned epochs and seed), whose t interval and TOST p this module computes when there are two or
more. A pair stopped before its planned epochs (a cut run, or one still training) counts at the last epoch both
runs reached, marked unfinished. Only real CIFAR-10 with all 50,000 training and 10,000 test images counts: a
subset's gap is of another budget. gap_series() returns plain dicts, what the figure draws, for tests."""

from __future__ import annotations

import statistics
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .. import stats
from ..spec import BASELINE, CIFAR10_TEST_IMAGES, CIFAR10_TRAIN_IMAGES, PAPER_EPOCHS, REFERENCE_4BIT
from .claims import FULL_BUDGET_NOISE, PAPER_BEST_ACC, PAPER_FP32_ACC
from .hosts import UNKNOWN_HOST, HostName, history_host, network_name
from .inputs import CompareResult, Inputs, RunHistory, is_real_cifar10
from .tidy import object_table

# The paper's gap: its cited (not run) fp32 figure minus its tathe4 best epoch, at 150 epochs.
PAPER_CLAIM = {"epochs": PAPER_EPOCHS, "gap": round(PAPER_FP32_ACC - PAPER_BEST_ACC, 2),
               "label": f"the paper's claim: {PAPER_FP32_ACC} (cited fp32) - {PAPER_BEST_ACC} (tathe4) at "
                        f"{PAPER_EPOCHS} epochs; not a measurement"}


@dataclass
class GapPoint:
    host_id: str
    device: str
    precision: str
    arch: str
    recipe: str
    epochs: int  # the budget; for an unfinished pair the last epoch both runs reached
    planned: int | None  # the schedule's planned epochs
    gap: float  # fp32 minus tathe4, test-accuracy points, mean over the pairs
    ci95: tuple[float, float] | None
    n: int  # seed pairs
    source: str  # "compare" or "run pairs"
    tost_p: float | None
    margin: float
    files: list[Path] = field(default_factory=list)
    provenance: list[dict] = field(default_factory=list)
    fixture: bool = False
    ci95_method: str | None = None
    tost_power_at_0: float | None = None  # the chance these n pairs show equivalence if the true gap were 0
    n_for_80pct_power: int | None = None  # pairs giving that chance 80% (None: more than compare's limit)

    @property
    def finished(self) -> bool:
        return self.planned is None or self.epochs >= self.planned

    @property
    def series_key(self) -> tuple:
        return (self.host_id, self.device, self.precision, self.arch)

    def budget_words(self) -> str:
        """'1 epoch of the short recipe' or 'epoch 94 of 150 of the paper recipe (unfinished)'."""
        if not self.finished:
            return f"epoch {self.epochs} of {self.planned} of the {self.recipe} recipe (unfinished)"
        return f"{self.epochs} epoch{'s' if self.epochs != 1 else ''} of the {self.recipe} recipe"

    def as_dict(self) -> dict:
        return {"epochs": self.epochs, "planned": self.planned, "gap": self.gap,
                "ci95": list(self.ci95) if self.ci95 else None, "n": self.n, "source": self.source,
                "recipe": self.recipe, "finished": self.finished, "files": [str(f) for f in self.files]}


# ---------------------------------------------------------------------------------------------
# Points from compare results


def _full_data_compare(c: CompareResult) -> bool:
    train = c.budget.get("train_images")
    return (is_real_cifar10(None, c.data_source or "")
            and (not isinstance(train, int) or train >= CIFAR10_TRAIN_IMAGES))


def compare_points(inputs: Inputs) -> list[GapPoint]:
    points = []
    for c in inputs.compares:
        epochs = c.budget.get("epochs")
        if c.reference != BASELINE or not isinstance(epochs, int) or not _full_data_compare(c):
            continue
        for comp in c.comparisons:
            if comp.candidate != REFERENCE_4BIT or comp.mean_gap is None:
                continue
            n = comp.n_seeds if isinstance(comp.n_seeds, int) else len([r for r in c.runs if r.method == BASELINE])
            points.append(GapPoint(
                c.host_id or UNKNOWN_HOST, c.device, c.precision, c.arch, str(c.budget.get("recipe") or "?"),
                epochs, None, comp.mean_gap, comp.ci95, n, "compare", comp.tost_p, c.margin_points or FULL_BUDGET_NOISE,
                [c.path], [c.provenance] if c.provenance else [], c.fixture, comp.ci95_method,
                comp.tost_power_at_0, comp.n_for_80pct_power))
    return points


# ---------------------------------------------------------------------------------------------
# Points from run pairs


def _full_data_run(run: RunHistory) -> bool:
    h = run.history
    return (run.budget.real_cifar10 and h["train_images"] >= CIFAR10_TRAIN_IMAGES
            and h["test_images"] >= CIFAR10_TEST_IMAGES)


# Everything two runs must share to be one seed pair, but the method (columns of inputs.histories; "epochs" is
# the planned budget).
PAIR_KEY = ["host_id", "arch", "recipe", "device", "precision", "epochs", "seed", "fixture"]
# What the runs of one point share: the pair's key but the seed, and the last epoch both runs reached.
POINT_KEY = ["host_id", "device", "precision", "arch", "recipe", "planned", "epoch", "fixture"]


def run_pairs(inputs: Inputs) -> list[tuple[RunHistory, RunHistory]]:
    """(fp32, tathe4) histories of one seed; where a seed ran twice, the longer run of each method (the first
    of equally long ones). In the order the pairs' runs first appear."""
    table = inputs.histories.assign(fixture=[r.fixture for r in inputs.runs],
                                    full_data=[_full_data_run(r) for r in inputs.runs])
    candidates = table[table["method"].isin([BASELINE, REFERENCE_4BIT]) & table["full_data"]]
    longest = candidates.groupby(PAIR_KEY + ["method"], sort=False, dropna=False)["epochs_done"].idxmax()
    pairs = []
    for _, runs in candidates.loc[longest].groupby(PAIR_KEY, sort=False, dropna=False):
        by_method = dict(zip(runs["method"], runs["run"]))
        if len(by_method) == 2:
            pairs.append((inputs.runs[by_method[BASELINE]], inputs.runs[by_method[REFERENCE_4BIT]]))
    return pairs


def _common_epoch(reference: RunHistory, candidate: RunHistory) -> tuple[int, float] | None:
    """The last epoch both runs reached and the gap there."""
    ref = {e["epoch"]: e["test_acc"] for e in reference.epochs}
    cand = {e["epoch"]: e["test_acc"] for e in candidate.epochs}
    common = set(ref) & set(cand)
    if not common:
        return None
    last = max(common)
    return last, ref[last] - cand[last]


def t_summary(gaps: list[float], margin: float) -> tuple[tuple[float, float] | None, float | None]:
    """The 95% t interval of the mean gap and the TOST p against +-margin; (None, None) for one pair."""
    return stats.t_interval(gaps), stats.tost_p(gaps, margin)


def pair_power(gaps: list[float], margin: float) -> tuple[float | None, int | None]:
    """(TOST power at a true gap of 0, seeds for 80% of it) of these run pairs, as compare computes it."""
    if len(gaps) < 2:
        return None, None
    power = stats.comparison_power(gaps, margin)
    return power.tost_power_at_0, power.n_for_80pct_tost_at_0


def pair_table(inputs: Inputs):
    """One row per run pair that reached a common epoch: POINT_KEY, the gap there and the pair's runs."""
    rows = []
    for ref, cand in run_pairs(inputs):
        common = _common_epoch(ref, cand)
        if common is not None:
            h = ref.history
            rows.append({"host_id": history_host(ref), "device": ref.device, "precision": ref.precision,
                         "arch": ref.arch, "recipe": h["recipe"], "planned": h.get("planned_epochs"),
                         "epoch": common[0], "fixture": ref.fixture, "gap": common[1], "ref": ref, "cand": cand})
    return object_table(rows, [*POINT_KEY, "gap", "ref", "cand"])


def run_pair_points(inputs: Inputs, margin: float = FULL_BUDGET_NOISE) -> list[GapPoint]:
    """One point per POINT_KEY: the mean gap of its pairs, their t interval, TOST p and power."""
    points = []
    for _, members in pair_table(inputs).groupby(POINT_KEY, sort=False, dropna=False):
        first = members.iloc[0]
        gaps = list(members["gap"])
        ci, tost = t_summary(gaps, margin)
        power, n_for_80 = pair_power(gaps, margin)
        runs = [r for ref, cand in zip(members["ref"], members["cand"]) for r in (ref, cand)]
        points.append(GapPoint(first["host_id"], first["device"], first["precision"], first["arch"], first["recipe"],
                               first["epoch"], first["planned"], statistics.fmean(gaps), ci, len(members),
                               "run pairs", tost, margin, [r.path for r in runs],
                               [r.provenance for r in runs if r.provenance], first["fixture"],
                               tost_power_at_0=power, n_for_80pct_power=n_for_80))
    return points


def gap_points(inputs: Inputs) -> list[GapPoint]:
    return compare_points(inputs) + run_pair_points(inputs)


def unfinished_runs(inputs: Inputs) -> list[RunHistory]:
    """Histories with fewer epochs than planned: still training, or stopped."""
    return [r for r in inputs.runs if isinstance(r.history.get("planned_epochs"), int)
            and len(r.epochs) < r.history["planned_epochs"]]


# ---------------------------------------------------------------------------------------------
# Series


def series_label(point: GapPoint, names: dict[str, HostName]) -> str:
    host = names[point.host_id].label if point.host_id in names else point.host_id
    precision = "" if point.precision == "fp32" else f", both in {point.precision}"
    return f"{'FIXTURE ' if point.fixture else ''}{host}{precision}, {network_name(point.arch)}"


def gap_series(points: list[GapPoint], names: dict[str, HostName]) -> list[dict]:
    """One series per host, device, precision and network: {"label", "host_id", ..., "points": [dict]},
    points by budget; what the gap-versus-budget figure draws."""
    grouped: dict[tuple, list[GapPoint]] = defaultdict(list)
    for p in points:
        grouped[p.series_key].append(p)
    series = []
    for (host, device, precision, arch), members in sorted(grouped.items()):
        members.sort(key=lambda p: (p.epochs, p.source, -p.n))
        series.append({"label": series_label(members[0], names), "host_id": host, "device": device,
                       "precision": precision, "arch": arch, "points": [p.as_dict() for p in members]})
    return series
