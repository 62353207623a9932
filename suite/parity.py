"""`q4bench parity`: the CI gate. Trains the reference (fp32) and the 4-bit candidate (tathe4) with the
same recipe, seed and budget, exports and verifies the candidate's ONNX files, and decides: the
accuracy gap (reference minus candidate, final epoch) must stay within the tolerance of parity.toml,
and the exported files must agree with PyTorch. Writes OUT/parity.json and a Markdown page.

The tolerance is not a guess: parity.toml records the seed spread it was derived from. At a CI budget
(a fraction of one epoch's images, one epoch) test accuracy of this network swings by points between
seeds, so a tolerance below that spread would fail on noise."""

from __future__ import annotations

import dataclasses
import shutil
import statistics
import time
import tomllib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .atomic import write_atomic, write_json_atomic
from .errors import UserError
from .provenance import stamp

DEFAULT_CONFIG = Path("parity.toml")
DEFAULT_OUT = Path("reports/parity")
DEFAULT_REPORT = Path("reports/parity.md")


# ---------------------------------------------------------------------------------------------
# The config file


@dataclass(frozen=True)
class ParityBudget:
    recipe: str
    epochs: int
    train_images: int  # the first N training images (q4bench train --subset)
    batch_size: int
    seed: int
    threads: int


@dataclass(frozen=True)
class OnnxGate:
    files: tuple[str, ...]  # the exported files whose agreement with PyTorch is gated
    min_top1_agreement: float  # percent of test images with the same top-1 class as PyTorch
    test_images: int  # verify on the first N test images
    calibration_images: int  # int8 activation ranges (reported, not gated)
    speed_rounds: int
    latency_runs: int


@dataclass(frozen=True)
class SpreadEvidence:
    """How the tolerance was obtained: the same gate run at several seeds."""

    command: str
    seeds: tuple[int, ...]
    reference_acc: tuple[float, ...]
    candidate_acc: tuple[float, ...]
    rule: str
    measured_on: str

    @property
    def gaps(self) -> list[float]:
        return [r - c for r, c in zip(self.reference_acc, self.candidate_acc)]


@dataclass(frozen=True)
class ParityConfig:
    path: str
    reference: str
    candidate: str
    budget: ParityBudget
    max_gap_points: float
    onnx: OnnxGate
    spread: SpreadEvidence | None


def _field(table: dict, key: str, kind, where: str):
    if key not in table:
        raise UserError(f"{where}: missing field '{key}'")
    value = table[key]
    ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise UserError(f"{where}: field '{key}' must be {kind.__name__}, got {value!r}")
    return value


def _positive(value, key: str, where: str):
    if value < 1:
        raise UserError(f"{where}: field '{key}' must be at least 1, got {value}")
    return value


def _table(doc: dict, key: str, path: Path) -> dict:
    table = doc.get(key)
    if not isinstance(table, dict):
        raise UserError(f"{path}: missing table [{key}]")
    return table


def load_config(path: str | Path = DEFAULT_CONFIG) -> ParityConfig:
    path = Path(path)
    try:
        doc = tomllib.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"{path}: parity config not found (pass --config)") from None
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path}: not valid TOML ({exc})") from None
    gate = _table(doc, "gate", path)
    where = f"{path} [gate]"
    reference, candidate = _field(gate, "reference", str, where), _field(gate, "candidate", str, where)
    max_gap = _field(gate, "max_gap_points", float, where)
    if max_gap < 0:
        raise UserError(f"{where}: field 'max_gap_points' must be >= 0, got {max_gap}")

    b, where = _table(doc, "budget", path), f"{path} [budget]"
    budget = ParityBudget(
        recipe=_field(b, "recipe", str, where),
        epochs=_positive(_field(b, "epochs", int, where), "epochs", where),
        train_images=_positive(_field(b, "train_images", int, where), "train_images", where),
        batch_size=_positive(_field(b, "batch_size", int, where), "batch_size", where),
        seed=_field(b, "seed", int, where),
        threads=_positive(_field(b, "threads", int, where), "threads", where),
    )

    o, where = _table(doc, "onnx", path), f"{path} [onnx]"
    files = _field(o, "files", list, where)
    if not files or not all(f in ("fp32", "int4", "int8") for f in files):
        raise UserError(f"{where}: field 'files' must list some of fp32, int4, int8, got {files!r}")
    onnx_gate = OnnxGate(
        files=tuple(files),
        min_top1_agreement=_field(o, "min_top1_agreement", float, where),
        test_images=_positive(_field(o, "test_images", int, where), "test_images", where),
        calibration_images=_positive(_field(o, "calibration_images", int, where), "calibration_images", where),
        speed_rounds=_positive(_field(o, "speed_rounds", int, where), "speed_rounds", where),
        latency_runs=_positive(_field(o, "latency_runs", int, where), "latency_runs", where),
    )

    spread = None
    if "spread" in doc:
        s, where = _table(doc, "spread", path), f"{path} [spread]"
        seeds = tuple(_field(s, "seeds", list, where))
        ref = tuple(float(x) for x in _field(s, "reference_acc", list, where))
        cand = tuple(float(x) for x in _field(s, "candidate_acc", list, where))
        if not (len(seeds) == len(ref) == len(cand)):
            raise UserError(f"{where}: seeds, reference_acc and candidate_acc must be equally long")
        spread = SpreadEvidence(
            command=_field(s, "command", str, where),
            seeds=seeds,
            reference_acc=ref,
            candidate_acc=cand,
            rule=_field(s, "rule", str, where),
            measured_on=_field(s, "measured_on", str, where),
        )
    return ParityConfig(str(path), reference, candidate, budget, max_gap, onnx_gate, spread)


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
    data: str
    reference_acc: float
    candidate_acc: float
    reference_best: float
    candidate_best: float
    train_images: int
    test_images: int
    epochs: int
    onnx: list[OnnxFigures] = field(default_factory=list)
    onnx_error: str | None = None  # export or verify refused the candidate's checkpoint
    onnx_test_images: int | None = None
    size_ratio_fp32_int4: float | None = None
    int4_distinct_codes: dict[str, int] | None = None
    seconds: dict[str, float] = field(default_factory=dict)
    reasons: list[str] = field(default_factory=list)

    @property
    def gap(self) -> float:
        return self.reference_acc - self.candidate_acc

    @property
    def passed(self) -> bool:
        return not self.reasons


def decide(outcome: ParityOutcome) -> list[str]:
    """Every reason the gate fails (empty: it passes). A candidate better than the reference passes."""
    cfg = outcome.config
    reasons = []
    if outcome.gap > cfg.max_gap_points:
        reasons.append(
            f"accuracy gap {outcome.gap:.2f} points ({cfg.reference} {outcome.reference_acc:.2f}% - "
            f"{cfg.candidate} {outcome.candidate_acc:.2f}%, final epoch) exceeds the tolerance of "
            f"{cfg.max_gap_points:.2f} points in {cfg.path}"
        )
    if outcome.onnx_error:
        reasons.append(f"ONNX export/verify of {cfg.candidate} failed: {outcome.onnx_error}")
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
    seed: int | None = None  # overrides the config's (for measuring the spread)


def _fresh(folder: Path) -> Path:
    # Only the folders this command creates are removed: a rerun starts clean instead of resuming.
    if folder.exists():
        shutil.rmtree(folder)
    return folder


def run_parity(request: ParityRequest, log: Callable[[str], None] = print) -> ParityOutcome:
    from . import export as exportmod
    from . import verify as verifymod
    from .train import TrainConfig, train

    if request.data_dir and request.synthetic:
        raise UserError("--data-dir and --synthetic exclude each other")
    config = load_config(request.config)
    budget = config.budget
    if request.seed is not None:
        budget = dataclasses.replace(budget, seed=request.seed)
        config = dataclasses.replace(config, budget=budget)
    out = Path(request.out)
    started = time.perf_counter()
    histories, seconds = {}, {}
    for method in (config.reference, config.candidate):
        run_dir = _fresh(out / "runs" / method)
        log(f"parity: training {method}: {budget.epochs} epoch(s) of the {budget.recipe} recipe on "
            f"{budget.train_images} training images, seed {budget.seed}, {budget.threads} threads")
        t0 = time.perf_counter()
        histories[method] = train(
            TrainConfig(
                method=method, recipe=budget.recipe, epochs=budget.epochs, threads=budget.threads,
                seed=budget.seed, data_dir=request.data_dir, synthetic=request.synthetic,
                subset=budget.train_images, batch_size=budget.batch_size, out=str(run_dir),
            ),
            log=lambda line: log(f"  {line}"),
        )
        seconds[f"train_{method}"] = time.perf_counter() - t0
    ref, cand = histories[config.reference], histories[config.candidate]
    if ref["data_source"] != cand["data_source"] or ref["train_images"] != cand["train_images"]:
        raise RuntimeError("the two parity runs saw different data")  # cannot happen: same config
    outcome = ParityOutcome(
        config=config,
        data=ref["data_source"],
        reference_acc=ref["final_test_acc"],
        candidate_acc=cand["final_test_acc"],
        reference_best=ref["best_test_acc"],
        candidate_best=cand["best_test_acc"],
        train_images=ref["train_images"],
        test_images=ref["test_images"],
        epochs=len(ref["epochs"]),
    )

    onnx_dir = _fresh(out / "onnx")
    checkpoint = out / "runs" / config.candidate / "checkpoint.pt"
    t0 = time.perf_counter()
    try:
        log(f"parity: exporting {config.candidate} to ONNX and verifying on {config.onnx.test_images} test images")
        exportmod.export(checkpoint, onnx_dir, request.data_dir, config.onnx.calibration_images, budget.threads)
        report = verifymod.verify(
            verifymod.VerifyConfig(
                checkpoint=str(checkpoint), onnx_dir=str(onnx_dir), data_dir=request.data_dir,
                threads=budget.threads, limit=config.onnx.test_images,
                agreement_images=config.onnx.test_images, speed_rounds=config.onnx.speed_rounds,
                latency_runs=config.onnx.latency_runs,
            ),
            log=lambda line: log(f"  {line}"),
        )
        outcome.onnx = [
            OnnxFigures(name, f["top1_agreement"], f["max_abs_logit_diff"], f["test_acc"], f["bytes"])
            for name, f in report["files"].items()
        ]
        outcome.onnx_test_images = report["test_images"]
        outcome.size_ratio_fp32_int4 = report.get("size_ratio_fp32_int4")
        outcome.int4_distinct_codes = report["files"].get("int4", {}).get("distinct_codes")
    except UserError as exc:
        outcome.onnx_error = str(exc)
    seconds["export_verify"] = time.perf_counter() - t0
    seconds["total"] = time.perf_counter() - started
    outcome.seconds = seconds
    outcome.reasons = decide(outcome)

    write_json_atomic(out / "parity.json", {**outcome_json(outcome), "provenance": stamp()})
    text = render_markdown(outcome, out)
    write_atomic(Path(request.report), lambda f: f.write(text.encode()))
    log(f"parity: {'PASS' if outcome.passed else 'FAIL'}; gap {outcome.gap:+.2f} points "
        f"(tolerance {config.max_gap_points:.2f}); {seconds['total']:.0f} s; wrote {request.report}")
    return outcome


def outcome_json(outcome: ParityOutcome) -> dict:
    cfg = outcome.config
    return {
        "passed": outcome.passed,
        "reasons": outcome.reasons,
        "reference": cfg.reference,
        "candidate": cfg.candidate,
        "data": outcome.data,
        "budget": asdict(cfg.budget),
        "train_images": outcome.train_images,
        "test_images": outcome.test_images,
        "epochs": outcome.epochs,
        "reference_final_acc": outcome.reference_acc,
        "candidate_final_acc": outcome.candidate_acc,
        "reference_best_acc": outcome.reference_best,
        "candidate_best_acc": outcome.candidate_best,
        "gap_points": outcome.gap,
        "max_gap_points": cfg.max_gap_points,
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


def render_markdown(outcome: ParityOutcome, out: Path) -> str:
    cfg, b = outcome.config, outcome.config.budget
    verdict = "PASS" if outcome.passed else "FAIL"
    lines = [
        f"# Parity gate: {verdict}",
        "",
        f"{cfg.reference} against {cfg.candidate}, the same recipe and seed; all figures measured by this run "
        f"(`q4bench parity`, config `{cfg.path}`).",
        "",
        f"- Budget: {outcome.epochs} epoch(s) of the `{b.recipe}` recipe on the first {outcome.train_images:,} "
        f"training images, batch {b.batch_size}, seed {b.seed}, {b.threads} threads; scored on "
        f"{outcome.test_images:,} test images; data: {outcome.data}.",
        f"- Gap ({cfg.reference} - {cfg.candidate}, final epoch): **{outcome.gap:+.2f} points**; tolerance "
        f"{cfg.max_gap_points:.2f} points.",
        f"- Wall time: " + ", ".join(f"{k} {v:.0f} s" for k, v in outcome.seconds.items()) + ".",
        "",
        "| method | final-epoch test acc | best-epoch test acc |",
        "|---|---|---|",
        f"| {cfg.reference} | {outcome.reference_acc:.2f}% | {outcome.reference_best:.2f}% |",
        f"| {cfg.candidate} | {outcome.candidate_acc:.2f}% | {outcome.candidate_best:.2f}% |",
        "",
        f"## ONNX ({cfg.candidate} checkpoint, {outcome.onnx_test_images or 0} test images)",
        "",
    ]
    if outcome.onnx_error:
        lines.append(f"Export/verify failed: {outcome.onnx_error}")
    else:
        lines += ["| file | bytes | top-1 agreement | max abs logit diff | test acc | gated |", "|---|---|---|---|---|---|"]
        for f in outcome.onnx:
            gated = f"yes (>= {cfg.onnx.min_top1_agreement:.2f}%)" if f.file in cfg.onnx.files else "no (reported)"
            lines.append(f"| {f.file}.onnx | {f.bytes:,} | {f.top1_agreement:.2f}% | {f.max_abs_logit_diff:.2e} | "
                         f"{f.test_acc:.2f}% | {gated} |")
        if outcome.size_ratio_fp32_int4:
            lines += ["", f"fp32.onnx / int4.onnx size ratio: {outcome.size_ratio_fp32_int4:.2f}x."]
    lines += ["", "## Verdict", ""]
    lines += [f"- {r}" for r in outcome.reasons] or ["- every check passed"]
    s = cfg.spread
    lines += ["", "## Where the tolerance comes from", ""]
    if s is None:
        lines.append(f"{cfg.path} records no seed spread; the tolerance is unsupported by a measurement.")
    else:
        gaps = s.gaps
        sd = statistics.stdev(gaps) if len(gaps) > 1 else float("nan")
        lines += [
            f"Measured with `{s.command}` on {s.measured_on}; rule: {s.rule}.",
            "",
            "| seed | " + cfg.reference + " | " + cfg.candidate + " | gap |",
            "|---|---|---|---|",
        ]
        lines += [f"| {seed} | {r:.2f}% | {c:.2f}% | {r - c:+.2f} |"
                  for seed, r, c in zip(s.seeds, s.reference_acc, s.candidate_acc)]
        lines += ["", f"Gap over seeds: mean {statistics.fmean(gaps):+.2f}, sample sd {sd:.2f}, "
                      f"min {min(gaps):+.2f}, max {max(gaps):+.2f} points."]
    lines += ["", f"Run folders: `{out / 'runs'}`; ONNX files and verify.json: `{out / 'onnx'}`.", ""]
    return "\n".join(lines)
