"""`q4bench parity`: the CI gate. Trains the reference (fp32) and the 4-bit candidate (tathe4) for the same
paired seeds side by side (q4bench compare's machinery: one child process per run), judges the config's
deliberately degraded controls (their pairs recorded in the config at the gate's budget, or trained when asked
or not recorded), exports and verifies the candidate's ONNX files, and decides: the candidate's mean gap over
the gate's seeds (reference minus candidate, final epoch) must stay within the tolerance, each control's must
exceed it (else the gate cannot tell a degraded method), and the exported
files must agree with PyTorch. Writes OUT/parity.json, OUT/compare.json and a Markdown page.

The tolerance is computed, not typed: parity.toml records per-seed-pair accuracies measured at exactly the
gate's budget, and the tolerance is the one-sided upper prediction bound for the mean of the gate's k seed
pairs (suite.stats.prediction_upper_bound), rounded up. A candidate as good as the measured one fails with
the configured probability; one that is worse by more than the spread fails."""

from __future__ import annotations

import math
import statistics
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, ClassVar

from .atomic import write_atomic, write_json_atomic
from .bounds import FALSE_FAIL_RATE, MAX_SEED, ROUND_UP_TO, check_count
from .config import (Choice, Count, Items, Number, Table, Text, check_data_source, check_fields, check_keys, read_table,
                     read_toml_tables, setting, table_of)
from .errors import FieldError, UserError
from .executors import JOBS_FILE, JOBS_FOLDER, ExecutorChoice, live_jobs, recorded_jobs
from .locks import claim, hold, remove_owned
from .provenance import stamp
from .spec import CHECKPOINT_FILE, COMPARE_FILE, ONNX_FILES, PAPER_ARCH, PARITY_FILE, PLAN_FILE, REQUEST_FILE
from .userfiles import check_output_dir, check_output_file

DEFAULT_CONFIG = Path("parity.toml")
DEFAULT_OUT = Path("reports/parity")
DEFAULT_REPORT = Path("reports/parity.md")
MIN_SPREAD_PAIRS = 2  # the arithmetic's minimum; the repository's config is held to 6 by its test
# The gate's sensitivity is stated as its chance to fail a candidate this many points worse than the measured one.
POWER_AT_POINTS = (0.5, 1.0, 2.0)


# ---------------------------------------------------------------------------------------------
# The config file


@dataclass(frozen=True)
class ParityBudget:
    """[budget]: what every run of the gate trains."""

    recipe: str = setting(Text())
    epochs: int = setting(Count("epochs"))
    train_images: int = setting(Count("train_images"))  # the first N training images (q4bench train --subset)
    batch_size: int = setting(Count("batch_size"))
    seeds: int = setting(Count("seeds"))  # the gate trains seeds first_seed..first_seed+seeds-1 of every method (pairs)
    threads: int = setting(Count("threads"))  # per child process
    parallel: int = setting(Count("parallel"))  # child processes at once
    arch: str = setting(Text(), PAPER_ARCH)  # the network every run trains
    # Seeds apart from the [spread] pairs': on the host that measured them the gate's runs would otherwise repeat
    # them bit for bit, and the tolerance is a bound for new pairs.
    first_seed: int = setting(Count("seed"), 0)

    def __post_init__(self):
        check_fields(self)
        try:  # the last seed a valid seed too
            check_count(self.first_seed, "seed", bounds=(0, MAX_SEED - self.seeds + 1))
        except FieldError as exc:
            raise FieldError("first_seed", f"{exc.problem} (with seeds = {self.seeds})") from None

    @property
    def seed_numbers(self) -> range:
        return range(self.first_seed, self.first_seed + self.seeds)

    def same_training(self, other: dict) -> list[str]:
        """The fields of a recorded budget that differ from this one's training (seeds and threads aside).
        A recorded budget without "arch" was measured on the paper's VGG, the only network then."""
        recorded = {"arch": PAPER_ARCH, **other}
        return [k for k in ("arch", "recipe", "epochs", "train_images", "batch_size")
                if recorded.get(k) != getattr(self, k)]


@dataclass(frozen=True)
class OnnxGate:
    """[onnx]: which exported files are gated, and how verify-onnx runs."""

    files: tuple[str, ...] = setting(Items(Choice(ONNX_FILES), nonempty=True))  # gated: agree with PyTorch
    min_top1_agreement: float = setting(Number(0, 100, low_inclusive=True))  # % of test images, same top-1 class
    test_images: int = setting(Count("test_images"))  # verify on the first N test images
    calibration_images: int = setting(Count("calibration_images"))  # int8 activation ranges (reported, not gated)
    speed_rounds: int = setting(Count("speed_rounds"))
    latency_runs: int = setting(Count("latency_runs"))
    profile_runs: int = setting(Count("profile_runs"), 1)  # the per-layer profile is not gated; one round is short

    def __post_init__(self):
        check_fields(self)


@dataclass(frozen=True)
class ToleranceRule:
    """[tolerance]: tolerance = prediction_upper_bound(measured gaps, k = the gate's seeds, false_fail_rate),
    rounded up to a multiple of round_up_to."""

    false_fail_rate: float = setting(Number(*FALSE_FAIL_RATE, low_inclusive=True, high_inclusive=False))
    round_up_to: float = setting(Number(*ROUND_UP_TO, low_inclusive=True))

    def __post_init__(self):
        check_fields(self)

    def describe(self, k: int) -> str:
        return (f"upper {100 * (1 - self.false_fail_rate):g}% prediction bound for the mean gap of {k} new seed "
                f"pair(s): mean + t(1 - {self.false_fail_rate:g}, n-1) x sd x sqrt(1/n + 1/{k}) over the n measured "
                f"pairs, rounded up to {self.round_up_to:g} point")


_ACCURACIES = Items(Number(0, 100, low_inclusive=True))  # percent (TOML allows nan and inf: refused)


@dataclass(frozen=True)
class SpreadEvidence:
    """[spread]: the gate's budget measured at several paired seeds (e.g. with q4bench compare)."""

    command: str = setting(Text())
    budget: dict = setting(Table())  # recipe, epochs, train_images, batch_size the pairs were measured at
    seeds: tuple[int, ...] = setting(Items(Count("seed")))
    reference_acc: tuple[float, ...] = setting(_ACCURACIES)
    candidate_acc: tuple[float, ...] = setting(_ACCURACIES)
    measured_on: str = setting(Text())

    def __post_init__(self):
        check_fields(self)
        if not (len(self.seeds) == len(self.reference_acc) == len(self.candidate_acc)):
            raise FieldError(None, "seeds, reference_acc and candidate_acc must be equally long")
        if len(self.seeds) < MIN_SPREAD_PAIRS:
            raise FieldError(None, f"a tolerance needs at least {MIN_SPREAD_PAIRS} measured seed pairs, "
                                   f"got {len(self.seeds)}")
        # Accuracy on the test set moves in steps of 0.01 points: gaps whose sd is below a millionth of a point
        # are equal, and a tolerance with no spread would fail any candidate a hair worse than the measured mean.
        if statistics.stdev(self.gaps) < 1e-6:
            raise FieldError(None, f"the measured gaps (reference_acc - candidate_acc) all equal {self.gaps[0]:g}, "
                                   f"so their sd is 0 and no tolerance follows; record pairs of distinct seeds as measured")

    @property
    def gaps(self) -> list[float]:
        return [r - c for r, c in zip(self.reference_acc, self.candidate_acc)]


@dataclass(frozen=True)
class RecordedControl:
    """[control]: the control measured at the gate's budget, which the gate judges when it does not retrain the
    control (the default, --controls recorded, as CI runs it), so its output still shows the tolerance failing
    a degraded method. [control] and [near_control] are both of this shape."""

    budget: dict = setting(Table())  # as [spread]'s
    seeds: tuple[int, ...] = setting(Items(Count("seed"), nonempty=True))
    reference_acc: tuple[float, ...] = setting(_ACCURACIES)
    control_acc: tuple[float, ...] = setting(_ACCURACIES)
    measured_on: str = setting(Text())

    def __post_init__(self):
        check_fields(self)
        if not (len(self.seeds) == len(self.reference_acc) == len(self.control_acc)):
            raise FieldError(None, "seeds, reference_acc and control_acc must be equally long and not empty")

    def pairs(self) -> list[dict]:
        return [{"seed": s, "reference_acc": r, "candidate_acc": c, "gap": r - c}
                for s, r, c in zip(self.seeds, self.reference_acc, self.control_acc)]


@dataclass(frozen=True)
class ParityConfig:
    """[gate]'s keys (the methods), with the other tables read into their own dataclasses."""

    RETIRED_KEYS: ClassVar[dict[str, str]] = {
        "max_gap_points": "is computed from [spread] by the rule in [tolerance]; remove it"}

    path: str
    budget: ParityBudget
    rule: ToleranceRule
    onnx: OnnxGate
    spread: SpreadEvidence
    reference: str = setting(Text())
    candidate: str = setting(Text())
    control: str | None = setting(Text(), None)  # a degraded method the gate must fail; None: not checked
    near_control: str | None = setting(Text(), None)  # a milder degradation, between the tolerance and about twice it: must fail too
    recorded_control: RecordedControl | None = None  # [control]: the control's pairs at the gate's budget
    recorded_near_control: RecordedControl | None = None  # [near_control]: the near control's

    def __post_init__(self):
        check_fields(self)
        measured = [("spread", "the pairs were", "them", self.spread.budget)]
        for table, record in (("control", self.recorded_control), ("near_control", self.recorded_near_control)):
            if record is not None:
                measured.append((table, "the control was", "it", record.budget))
        for table, what, it, budget in measured:
            differ = self.budget.same_training(budget)
            if differ:
                raise UserError(f"{self.path} [{table}]: {what} measured at another budget than [budget] "
                                f"({', '.join(differ)} differ): remeasure {it} at the gate's budget")

    @property
    def controls(self) -> tuple[str, ...]:
        return tuple(c for c in (self.control, self.near_control) if c)

    @property
    def recorded(self) -> dict[str, RecordedControl]:
        """Each control whose pairs the config records, by name."""
        pairs = ((self.control, self.recorded_control), (self.near_control, self.recorded_near_control))
        return {name: record for name, record in pairs if name and record is not None}

    @property
    def max_gap_points(self) -> float:
        from .stats import prediction_upper_bound

        bound = prediction_upper_bound(self.spread.gaps, self.budget.seeds, self.rule.false_fail_rate)
        step = self.rule.round_up_to
        return round(math.ceil(bound / step - 1e-9) * step, 6)

    def fail_probability(self, worse_by: float) -> float:
        """The chance the gate fails a candidate whose true mean gap is the measured mean + ``worse_by`` points:
        P(mean of k new gaps > tolerance), the k gaps normal with the measured sd (the sd taken as known, so an
        approximation; worse_by 0 gives the false-fail rate the rounded-up tolerance really has)."""
        from scipy.stats import norm

        gaps, k = self.spread.gaps, self.budget.seeds
        sd_of_mean = statistics.stdev(gaps) / math.sqrt(k)
        return float(norm.sf((self.max_gap_points - statistics.fmean(gaps) - worse_by) / sd_of_mean))


_TABLES = {"budget": ParityBudget, "tolerance": ToleranceRule, "onnx": OnnxGate, "spread": SpreadEvidence}
_OPTIONAL_TABLES = {"control": RecordedControl, "near_control": RecordedControl}


def load_config(path: str | Path = DEFAULT_CONFIG) -> ParityConfig:
    """parity.toml: [gate] (the methods), [budget], [tolerance], [onnx], [spread] and optionally [control] and
    [near_control]; every error one line naming the file, the table and the key."""
    path = Path(path)
    doc = read_toml_tables(path, "parity config", ("gate", *_TABLES, *_OPTIONAL_TABLES))
    check_keys(ParityConfig, table_of(doc, "gate", path), f"{path} [gate]")  # the methods first: what the gate is
    tables = {name: read_table(cls, table_of(doc, name, path), f"{path} [{name}]") for name, cls in _TABLES.items()}
    recorded = {name: read_table(cls, table_of(doc, name, path), f"{path} [{name}]")
                for name, cls in _OPTIONAL_TABLES.items() if name in doc}
    return read_table(ParityConfig, table_of(doc, "gate", path), f"{path} [gate]", path=str(path),
                      budget=tables["budget"], rule=tables["tolerance"], onnx=tables["onnx"], spread=tables["spread"],
                      recorded_control=recorded.get("control"), recorded_near_control=recorded.get("near_control"))


# ---------------------------------------------------------------------------------------------
# The verdict (pure: tests call it with made-up figures)


@dataclass
class OnnxFigures:
    file: str
    top1_agreement: float
    max_abs_logit_diff: float
    test_acc: float
    bytes: int


@dataclass
class ParityOutcome:
    config: ParityConfig
    candidate: str  # the config's candidate unless --candidate named another
    data: str
    pairs: list[dict]  # per seed: seed, reference_acc, candidate_acc, gap (final epoch)
    train_images: int
    test_images: int
    epochs: int
    controls: dict[str, list[dict]] = field(default_factory=dict)  # control -> its pairs; empty: not run
    recorded_controls: tuple[str, ...] = ()  # the controls judged from their pairs recorded in the config, not trained
    comparison: dict | None = None  # suite.stats over the candidate's pairs (CI, verdict): reported, not gated
    onnx: list[OnnxFigures] = field(default_factory=list)
    onnx_error: str | None = None  # export or verify refused the candidate's checkpoint
    onnx_test_images: int | None = None
    size_ratio_fp32_int4: float | None = None
    int4_distinct_codes: dict[str, int] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def reference_acc(self) -> float:
        return statistics.fmean(p["reference_acc"] for p in self.pairs)

    @property
    def candidate_acc(self) -> float:
        return statistics.fmean(p["candidate_acc"] for p in self.pairs)

    @property
    def gap(self) -> float:
        return statistics.fmean(p["gap"] for p in self.pairs)

    @property
    def control_gaps(self) -> dict[str, float]:
        return {name: statistics.fmean(p["gap"] for p in pairs) for name, pairs in self.controls.items()}

    @property
    def passed(self) -> bool:
        return not self.reasons


def decide(outcome: ParityOutcome) -> list[str]:
    """Every reason the gate fails (empty: it passes). A candidate better than the reference passes."""
    cfg, tol = outcome.config, outcome.config.max_gap_points
    reasons = []
    n = len(outcome.pairs)
    if outcome.gap > tol:
        reasons.append(
            f"mean accuracy gap {outcome.gap:.2f} points over {n} seed pair(s) ({cfg.reference} "
            f"{outcome.reference_acc:.2f}% - {outcome.candidate} {outcome.candidate_acc:.2f}%, final epoch) exceeds "
            f"the tolerance of {tol:.2f} points computed from the {len(cfg.spread.seeds)} measured pairs in {cfg.path}"
        )
    for name, gap in outcome.control_gaps.items():
        if gap <= tol:
            reasons.append(
                f"the degraded control {name} passed (mean gap {gap:.2f} <= tolerance {tol:.2f} points): at this "
                f"budget the gate cannot tell a degraded method from a sound one"
            )
    if outcome.onnx_error:
        reasons.append(f"ONNX export/verify of {outcome.candidate} failed: {outcome.onnx_error}")
    for f in outcome.onnx:
        if f.file in cfg.onnx.files and f.top1_agreement < cfg.onnx.min_top1_agreement:
            reasons.append(
                f"{f.file}.onnx top-1 agreement with PyTorch {f.top1_agreement:.2f}% is below "
                f"{cfg.onnx.min_top1_agreement:.2f}% (on {outcome.onnx_test_images} test images)"
            )
    missing = set(cfg.onnx.files) - {f.file for f in outcome.onnx}
    if missing and not outcome.onnx_error:
        reasons.append(f"verify.json has no figures for {', '.join(sorted(missing))}")
    return reasons


# ---------------------------------------------------------------------------------------------
# The run


@dataclass(frozen=True)
class ParityRequest:
    config: str = str(DEFAULT_CONFIG)
    data_dir: str | None = None
    synthetic: bool = False
    out: str = str(DEFAULT_OUT)
    report: str = str(DEFAULT_REPORT)
    candidate: str | None = None  # judge this method instead of the config's (e.g. the control, to see it fail)
    controls: str = "recorded"  # which of the config's controls this run trains (CONTROL_CHOICES)
    overwrite: bool = False  # clear OUT even when parity did not make what is there
    executor: ExecutorChoice = field(default_factory=ExecutorChoice)  # where the runs train (compare's executors)

    def __post_init__(self):
        check_data_source(self.data_dir, self.synthetic)
        if self.controls not in CONTROL_CHOICES:
            raise UserError(f"--controls {self.controls!r}: choose one of {', '.join(CONTROL_CHOICES)}")


# Which degraded controls a gate run trains. "recorded" (the default, and CI's): none that the config records
# pairs for ([control], [near_control], measured at the gate's budget); those pairs are judged by today's
# tolerance instead, which shows the gate's teeth without their runs (6 of the 18 runs with one control retrained). A control
# without recorded pairs is trained. "near": the near-threshold control trained, the other judged from its
# record. "all": both trained (after a change to the budget, the tolerance or the methods).
CONTROL_CHOICES = ("recorded", "near", "all")


def trained_controls(config: ParityConfig, choice: str, candidate: str) -> tuple[str, ...]:
    """The controls a gate run trains for ``choice`` (never the candidate itself)."""
    asked = set(config.controls) if choice == "all" else {config.near_control} if choice == "near" else set()
    return tuple(c for c in config.controls if (c in asked or c not in config.recorded) and c != candidate)


# What one gate run writes under OUT; removed first, so a rerun trains afresh instead of resuming a stale run.
# Removed only in a folder parity made (its marker, or a parity.json from before the marker): a compare folder
# or anyone's files under these names are refused instead, unless --overwrite.
_OWNED = ("runs", "onnx", "timing", REQUEST_FILE, PLAN_FILE, COMPARE_FILE, PARITY_FILE, JOBS_FOLDER, JOBS_FILE)


def _clear(out: Path, overwrite: bool) -> None:
    live = live_jobs(recorded_jobs(out)[1])
    if live:  # clearing would pull the folder from under them, and they would write into the new runs
        raise UserError(f"{out / JOBS_FILE}: the jobs of {', '.join(sorted(live))} are recorded as queued or running; "
                        "cancel them (or let them end), then rerun the gate")
    claim(out, "parity", _OWNED, overwrite, proof=(PARITY_FILE,))
    for name in _OWNED:
        remove_owned(out / name)


def _pairs(doc: dict, method: str) -> tuple[list[dict], dict]:
    [comparison] = [c for c in doc["comparisons"] if c["candidate"] == method]
    pairs = [{k: p[k] for k in ("seed", "reference_acc", "candidate_acc", "gap")} for p in comparison["pairs"]]
    return pairs, comparison


def run_parity(request: ParityRequest, log: Callable[[str], None] = print) -> ParityOutcome:
    # The lock spans the whole gate (training, export, verify, the page): a second parity on OUT must not
    # clear the folder under this one. A bad --out or --report is refused before the lock creates anything.
    check_output_dir(request.out, "--out")
    check_output_file(request.report, "--report")
    with hold(request.out, "parity"):
        return _run_parity(request, log)


def _run_parity(request: ParityRequest, log: Callable[[str], None]) -> ParityOutcome:
    config = load_config(request.config)
    candidate = config.candidate if request.candidate is None else request.candidate  # "" is refused, not defaulted
    controls = trained_controls(config, request.controls, candidate)
    started = time.perf_counter()
    doc = _train_pairs(request, config, (candidate, *controls), log)
    outcome = _outcome(config, doc, candidate, controls)
    outcome.seconds = {"train": time.perf_counter() - started}
    t0 = time.perf_counter()
    _export_and_verify(request, outcome, log)
    outcome.seconds["export_verify"] = time.perf_counter() - t0
    outcome.seconds["total"] = time.perf_counter() - started
    outcome.reasons = decide(outcome)

    out = Path(request.out)
    write_json_atomic(out / PARITY_FILE, {**outcome_json(outcome), "provenance": stamp()})
    text = render_markdown(outcome, out)
    write_atomic(Path(request.report), lambda f: f.write(text.encode()))
    log(_summary_line(outcome, request.report))
    return outcome


def _train_pairs(request: ParityRequest, config: ParityConfig, methods: tuple[str, ...],
                 log: Callable[[str], None]) -> dict:
    """The reference and ``methods`` trained for the gate's seeds (q4bench compare's machinery); the compare
    result, also written as OUT/compare.json."""
    from . import compare as comparemod

    budget, tol = config.budget, config.max_gap_points
    out = Path(request.out)
    creq = comparemod.validate(comparemod.CompareRequest(
        methods=methods, reference=config.reference, seeds=budget.seeds, first_seed=budget.first_seed,
        arch=budget.arch,
        epochs=budget.epochs, recipe=budget.recipe, subset=budget.train_images, synthetic=request.synthetic,
        data_dir=request.data_dir, parallel=budget.parallel, threads=budget.threads, batch_size=budget.batch_size,
        out=str(out), executor=request.executor,
    ))
    check_output_dir(out, "--out")
    check_output_file(request.report, "--report")
    _clear(out, request.overwrite)
    comparemod.check_identity(out, creq)
    runs = comparemod.all_runs(creq)
    log(f"parity: {len(runs)} runs ({', '.join(r.name for r in runs)}): {budget.arch}, {budget.epochs} epoch(s) "
        f"of the {budget.recipe} recipe on {budget.train_images} training images, batch {budget.batch_size}; "
        f"{budget.parallel} children of {budget.threads} thread(s) side by side; tolerance {tol:.2f} points")
    comparemod.execute(creq, runs, budget.epochs, out / "runs", lambda line: log(f"  {line}"))
    doc = comparemod.build_result(creq, budget.epochs, out)
    comparemod.validate_result(doc, out / COMPARE_FILE)
    write_json_atomic(out / COMPARE_FILE, doc)
    return doc


def _outcome(config: ParityConfig, doc: dict, candidate: str, controls: tuple[str, ...]) -> ParityOutcome:
    """The pairs the gate judges, from the compare result: the candidate's, and each control's (trained, or as
    recorded in the config when it was not retrained)."""
    pairs, comparison = _pairs(doc, candidate)
    outcome = ParityOutcome(
        config=config, candidate=candidate, data=doc["data_source"], pairs=pairs,
        train_images=doc["budget"]["train_images"], test_images=doc["budget"]["test_images"],
        epochs=config.budget.epochs, controls={c: _pairs(doc, c)[0] for c in controls}, comparison=comparison,
    )
    if candidate == config.candidate:
        # Not retrained: judge the controls' recorded pairs by today's tolerance, so the output still shows the
        # gate failing a degraded method (and fails the gate if someone loosens the tolerance past it).
        recorded = {name: record.pairs() for name, record in config.recorded.items() if name not in controls}
        outcome.controls = {name: recorded.get(name) or outcome.controls[name] for name in config.controls
                            if name in recorded or name in outcome.controls}
        outcome.recorded_controls = tuple(recorded)
    return outcome


def _export_and_verify(request: ParityRequest, outcome: ParityOutcome, log: Callable[[str], None]) -> None:
    """The candidate's first-seed checkpoint exported and verified; its figures (or why they are missing) into
    the outcome."""
    from . import export as exportmod
    from . import verify as verifymod

    config, budget, candidate = outcome.config, outcome.config.budget, outcome.candidate
    out = Path(request.out)
    onnx_dir = out / "onnx"
    checkpoint = out / "runs" / f"{candidate}-seed{budget.first_seed}" / CHECKPOINT_FILE
    threads = budget.threads * budget.parallel  # nothing else runs now
    try:
        log(f"parity: exporting {candidate} (seed {budget.first_seed}) to ONNX and verifying on {config.onnx.test_images} test images")
        exportmod.export(checkpoint, onnx_dir, request.data_dir, config.onnx.calibration_images, threads)
        report = verifymod.verify(
            verifymod.VerifyConfig(
                checkpoint=str(checkpoint), onnx_dir=str(onnx_dir), data_dir=request.data_dir,
                threads=threads, limit=config.onnx.test_images,
                agreement_images=config.onnx.test_images, speed_rounds=config.onnx.speed_rounds,
                latency_runs=config.onnx.latency_runs, profile_runs=config.onnx.profile_runs,
            ),
            log=lambda line: log(f"  {line}"),
        )
    except UserError as exc:
        outcome.onnx_error = str(exc)
        return
    outcome.onnx = [
        OnnxFigures(name, f["top1_agreement"], f["max_abs_logit_diff"], f["test_acc"], f["bytes"])
        for name, f in report["files"].items()
    ]
    outcome.onnx_test_images = report["test_images"]
    outcome.size_ratio_fp32_int4 = report.get("size_ratio_fp32_int4")
    outcome.int4_distinct_codes = report["files"].get("int4", {}).get("distinct_codes")


def _summary_line(outcome: ParityOutcome, report: str) -> str:
    tol = outcome.config.max_gap_points
    control_text = "".join(f"; control {name} gap {gap:+.2f}"
                           f"{' (recorded in the config, not retrained)' if name in outcome.recorded_controls else ''} "
                           f"({'fails as it must' if gap > tol else 'PASSES: no teeth'})"
                           for name, gap in outcome.control_gaps.items())
    return (f"parity: {'PASS' if outcome.passed else 'FAIL'}; {outcome.candidate} mean gap {outcome.gap:+.2f} points "
            f"over {len(outcome.pairs)} seed pair(s) (tolerance {tol:.2f}){control_text}; "
            f"{outcome.seconds['total']:.0f} s; wrote {report}")


def outcome_json(outcome: ParityOutcome) -> dict:
    from .provenance import stamp

    cfg = outcome.config
    return {
        "provenance": stamp(command="q4bench parity"),
        "passed": outcome.passed,
        "reasons": outcome.reasons,
        "reference": cfg.reference,
        "candidate": outcome.candidate,
        "data": outcome.data,
        "budget": asdict(cfg.budget),
        "train_images": outcome.train_images,
        "test_images": outcome.test_images,
        "epochs": outcome.epochs,
        "pairs": outcome.pairs,
        "controls": [{"method": name, "pairs": pairs, "gap_points": outcome.control_gaps[name],
                      "source": "recorded" if name in outcome.recorded_controls else "trained"} for name, pairs in outcome.controls.items()],
        "reference_final_acc": outcome.reference_acc,
        "candidate_final_acc": outcome.candidate_acc,
        "gap_points": outcome.gap,
        "max_gap_points": cfg.max_gap_points,
        "false_fail_rate_at_measured_spread": cfg.fail_probability(0.0),  # the rule bounds it by [tolerance]
        "fail_probability_if_worse_by": {f"{d:g}": cfg.fail_probability(d) for d in POWER_AT_POINTS},
        "tolerance_rule": cfg.rule.describe(cfg.budget.seeds),
        "spread_pairs": len(cfg.spread.seeds),
        "statistics": outcome.comparison,
        "compare": COMPARE_FILE,
        "config": cfg.path,
        "onnx": [asdict(f) for f in outcome.onnx],
        "onnx_error": outcome.onnx_error,
        "onnx_test_images": outcome.onnx_test_images,
        "size_ratio_fp32_int4": outcome.size_ratio_fp32_int4,
        "int4_distinct_codes": outcome.int4_distinct_codes,
        "min_top1_agreement": cfg.onnx.min_top1_agreement,
        "gated_onnx_files": list(cfg.onnx.files),
        "seconds": outcome.seconds,
    }


def _percent(p: float) -> str:
    """A probability as a percentage that never rounds a small risk to 0% or a near-certainty to 100%."""
    return f"{100 * p:.2f}%" if not 0.01 <= p <= 0.99 else f"{100 * p:.0f}%"


def _sensitivity_line(cfg: ParityConfig) -> str:
    """What the gate can and cannot tell: it is a regression gate, not an equivalence test."""
    worse = ", ".join(f"{_percent(cfg.fail_probability(d))} at {d:+g}" for d in POWER_AT_POINTS)
    return (f"- Sensitivity (derived from the measured spread, normal approximation): a candidate as good as the "
            f"measured one fails {_percent(cfg.fail_probability(0.0))} of the time if the measured mean and sd are "
            f"the true ones (the rule bounds it at {_percent(cfg.rule.false_fail_rate)} allowing for their "
            f"uncertainty); one whose "
            f"true gap is the measured mean {statistics.fmean(cfg.spread.gaps):+.2f} plus d points fails with "
            f"probability {worse}. A regression gate: it does not show equivalence to {cfg.reference}.")


def render_markdown(outcome: ParityOutcome, out: Path) -> str:
    """The gate's page: the verdict and what it rests on, the seed pairs, the ONNX checks, the reasons, and
    where the tolerance comes from."""
    lines = [f"# Parity gate: {'PASS' if outcome.passed else 'FAIL'}", "", *_overview(outcome), "",
             *_pairs_table(outcome), "", *_onnx_section(outcome), "", "## Verdict", ""]
    lines += [f"- {r}" for r in outcome.reasons] or ["- every check passed"]
    lines += ["", *_tolerance_section(outcome.config)]
    lines += ["", f"Run folders: `{out / 'runs'}`; compare result: `{out / COMPARE_FILE}`; ONNX files and "
                  f"verify.json: `{out / 'onnx'}`.", ""]
    return "\n".join(lines)


def _overview(outcome: ParityOutcome) -> list[str]:
    cfg, b = outcome.config, outcome.config.budget
    tol = cfg.max_gap_points
    lines = [
        f"{cfg.reference} against {outcome.candidate}, {len(outcome.pairs)} paired seed(s) trained side by side; "
        f"all figures measured by this run (`q4bench parity`, config `{cfg.path}`).",
        "",
        f"- Budget: {b.arch}, {outcome.epochs} epoch(s) of the `{b.recipe}` recipe on the first {outcome.train_images:,} "
        f"training images, batch {b.batch_size}, seeds {b.seed_numbers[0]}..{b.seed_numbers[-1]}, {b.parallel} children of {b.threads} "
        f"thread(s); scored on {outcome.test_images:,} test images; data: {outcome.data}.",
        f"- Mean gap ({cfg.reference} - {outcome.candidate}, final epoch): **{outcome.gap:+.2f} points**; tolerance "
        f"{tol:.2f} points.",
    ]
    for name, gap in outcome.control_gaps.items():
        lines.append(f"- Degraded control {name}" + (" (accuracies recorded in the config at this budget, not "
                     "retrained in this run)" if name in outcome.recorded_controls else "")
                     + f": mean gap {gap:+.2f} points "
                     f"({'over the tolerance: the gate fails it, as it must' if gap > tol else 'WITHIN the tolerance: the gate cannot tell it'}).")
    lines.append(_sensitivity_line(cfg))
    c = outcome.comparison
    if c is not None:
        ci = f"95% CI [{c['ci95'][0]:+.2f}, {c['ci95'][1]:+.2f}]" if c["ci95"] else "no CI from one seed"
        lines.append(f"- Statistics (reported, not gated): {ci}, verdict {c['verdict']} "
                     f"({c['reason']}).")
    lines.append("- Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in outcome.seconds.items()) + ".")
    return lines


def _pairs_table(outcome: ParityOutcome) -> list[str]:
    """Per seed: the reference's, the candidate's and each control's final accuracy, with the gaps."""
    cfg = outcome.config
    lines = [
        f"| seed | {cfg.reference} | {outcome.candidate} | gap |" + "".join(f" {c} | gap |" for c in outcome.controls),
        "|---|---|---|---|" + "---|---|" * len(outcome.controls),
    ]
    by_seed = {name: {p["seed"]: p for p in pairs} for name, pairs in outcome.controls.items()}
    for p in outcome.pairs:
        row = f"| {p['seed']} | {p['reference_acc']:.2f}% | {p['candidate_acc']:.2f}% | {p['gap']:+.2f} |"
        for control in by_seed.values():
            c = control.get(p["seed"])
            row += f" {c['candidate_acc']:.2f}% | {c['gap']:+.2f} |" if c else " - | - |"
        lines.append(row)
    return lines


def _onnx_section(outcome: ParityOutcome) -> list[str]:
    cfg = outcome.config
    lines = [
        f"## ONNX ({outcome.candidate} seed-{cfg.budget.first_seed} checkpoint, {outcome.onnx_test_images or 0} test images)",
        "",
    ]
    if outcome.onnx_error:
        return lines + [f"Export/verify failed: {outcome.onnx_error}"]
    lines += ["| file | bytes | top-1 agreement | max abs logit diff | test acc | gated |", "|---|---|---|---|---|---|"]
    for f in outcome.onnx:
        gated = f"yes (>= {cfg.onnx.min_top1_agreement:.2f}%)" if f.file in cfg.onnx.files else "no (reported)"
        lines.append(f"| {f.file}.onnx | {f.bytes:,} | {f.top1_agreement:.2f}% | {f.max_abs_logit_diff:.2e} | "
                     f"{f.test_acc:.2f}% | {gated} |")
    if outcome.size_ratio_fp32_int4:
        lines += ["", f"fp32.onnx / int4.onnx size ratio: {outcome.size_ratio_fp32_int4:.2f}x."]
    return lines


def _tolerance_section(cfg: ParityConfig) -> list[str]:
    """The measured pairs the tolerance is computed from, and the rule."""
    s, gaps = cfg.spread, cfg.spread.gaps
    lines = [
        "## Where the tolerance comes from",
        "",
        f"Measured with `{s.command}` on {s.measured_on}, at the gate's budget. Rule: {cfg.rule.describe(cfg.budget.seeds)} "
        f"-> **{cfg.max_gap_points:.2f} points**.",
        "",
        f"| seed | {cfg.reference} | {cfg.candidate} | gap |",
        "|---|---|---|---|",
    ]
    lines += [f"| {seed} | {r:.2f}% | {c_:.2f}% | {r - c_:+.2f} |"
              for seed, r, c_ in zip(s.seeds, s.reference_acc, s.candidate_acc)]
    lines += ["", f"Gap over {len(gaps)} measured pairs: mean {statistics.fmean(gaps):+.2f}, sample sd "
                  f"{statistics.stdev(gaps):.2f}, min {min(gaps):+.2f}, max {max(gaps):+.2f} points."]
    return lines
