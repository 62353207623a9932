"""Argument parsing only: each subcommand calls one library function. A UserError becomes one line
on stderr and exit status 2, never a traceback."""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys

from .atomic import disk_full, disk_full_error
from .bounds import MAX_HOURS, count_type, number_type
from .errors import UserError
from .spec import (ARCH_NAMES, BASELINE, DATASET_SIZES, DEFAULT_METHODS, EXIT_GATE_FAILED, EXIT_INTERRUPTED, EXIT_OK,
                   EXIT_USER_ERROR)


# One help line for --arch in train, compare and bench (spec.ARCH_NAMES: torch-free, so --help stays quick).
ARCH_HELP = (f"the network: {' or '.join(ARCH_NAMES)} (default %(default)s, the paper's VGG; simpleresnet4bit is the "
             "paper code's 73,178-parameter network)")

class _Parser(argparse.ArgumentParser):
    """argparse's errors as one line (`q4bench train: error: ...`, exit 2) instead of usage plus the error;
    --help still prints the usage. Subcommand parsers inherit the class."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"{self.prog}: error: {' '.join(message.split())}\n")


def _defaults(cls) -> dict:
    """A config dataclass's defaults, for a parser's set_defaults: the options named as its fields default to them
    (help strings show them as %(default)s), so no default is spelled twice."""
    return {f.name: f.default for f in dataclasses.fields(cls) if f.default is not dataclasses.MISSING}


def _from_options(cls, args: argparse.Namespace, **given):
    """A config dataclass from the parsed options named as its fields, and ``given`` for the fields whose option is
    spelled otherwise; the dataclass checks the values and the rules across them."""
    named = {f.name: getattr(args, f.name) for f in dataclasses.fields(cls) if hasattr(args, f.name)}
    return cls(**{**named, **given})


def _train(args: argparse.Namespace) -> None:
    from .train import TrainConfig, train

    train(_from_options(TrainConfig, args))


def _add_train(sub) -> None:
    from .methods import METHODS
    from .recipes import RECIPES
    from .train import TrainConfig

    recipes = "\n".join(f"  {r.name}: {r.summary}" for r in RECIPES.values())
    methods = "\n".join(f"  {m.name}: {m.summary}" for m in METHODS.values())
    p = sub.add_parser(
        "train",
        help="train one method, writing OUT/history.json and OUT/checkpoint.pt after every epoch",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"Train one of the paper's networks ({' and '.join(ARCH_NAMES)}) with one method.\n\nrecipes:\n{recipes}\n\n"
        f"methods:\n{methods}\n\n"
        "--epochs N shortens the paper recipe without changing its schedule: the LR follows the same T_max=100\n"
        "cosine, so a 10-epoch run never reaches the low-LR phase. The short recipe instead lays its schedule\n"
        "over whatever --epochs gives, ending at LR 0 (default 5 epochs).",
    )
    p.add_argument("--method", help="a registered method (default %(default)s)")
    p.add_argument("--arch", metavar="NET", help=ARCH_HELP)
    p.add_argument("--recipe", help="training recipe (default %(default)s)")
    p.add_argument("--epochs", type=count_type("epochs"), help="number of epochs (default: the recipe's, 150 for paper)")
    p.add_argument("--threads", type=count_type("threads"), help="torch intra-op threads (default: torch's choice)")
    p.add_argument("--seed", type=count_type("seed"))
    p.add_argument("--dataset", choices=list(DATASET_SIZES))
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py / cifar-100-python (else $Q4BENCH_DATA)")
    p.add_argument("--synthetic", action="store_true", help="train on generated data in the official format")
    p.add_argument("--subset", type=count_type("subset"), help="train on the first N training images (the test set stays whole)")
    p.add_argument("--batch-size", type=count_type("batch_size"), help="override the recipe's batch size (128)")
    p.add_argument("--resume", action="store_true", help="continue the run in OUT from its last checkpoint")
    p.add_argument("--device", help="cpu or cuda (default %(default)s)")
    p.add_argument("--precision",
                   help="fp32 or bf16: autocast around forward and loss, master weights and optimizer in fp32 "
                        "(default %(default)s; on CUDA fp32 runs with TF32 off)")
    p.add_argument("--out", required=True, help="run folder")
    p.set_defaults(func=_train, **_defaults(TrainConfig))


def _export(args: argparse.Namespace) -> None:
    from .export import describe, export

    print(describe(export(args.checkpoint, args.out, args.data_dir, args.calibration_images, args.threads,
                          args.overwrite)))


def _add_export(sub) -> None:
    from .export import DEFAULT_CALIBRATION_IMAGES

    p = sub.add_parser(
        "export",
        help="write OUT/fp32.onnx, OUT/int4.onnx and OUT/int8.onnx of a trained 4-bit checkpoint",
        description="fp32.onnx: dequantized weights in float (the reference). int4.onnx: INT4 weight initializers "
        "-> DequantizeLinear (opset 21) -> Conv/Gemm, BatchNorm kept as nodes. int8.onnx: the same codes in int8, "
        "BatchNorm folded into per-channel weight scales, uint8 activations calibrated on training images, QDQ "
        "form that onnxruntime fuses into QLinearConv/QGemm. Both networks (vgg4bit, simpleresnet4bit) export. "
        "Checkpoints without symmetric per-layer 4-bit weights (fp32, luq4, cpt, sbm8, sbm4, fractrain-pfq, "
        "fractrain-dfq) are refused: they have no codes these files could hold.",
    )
    p.add_argument("--checkpoint", required=True, help="a checkpoint.pt written by q4bench train")
    p.add_argument("--out", required=True, help="folder for the three .onnx files")
    p.add_argument("--data-dir", help="CIFAR folder for calibration images (default: the checkpoint's data)")
    p.add_argument(
        "--calibration-images",
        type=count_type("calibration_images"),
        default=DEFAULT_CALIBRATION_IMAGES,
        help=f"training images for int8 activation ranges (default {DEFAULT_CALIBRATION_IMAGES})",
    )
    p.add_argument("--threads", type=count_type("threads"), help="torch threads for calibration")
    p.add_argument("--overwrite", action="store_true",
                   help="replace .onnx files and a verify.json in OUT that no export wrote (without it, refused)")
    p.set_defaults(func=_export)


def _verify_onnx(args: argparse.Namespace) -> None:
    from .verify import VerifyConfig, verify

    verify(_from_options(VerifyConfig, args, onnx_dir=args.onnx))


def _add_verify_onnx(sub) -> None:
    from .verify import VerifyConfig

    p = sub.add_parser(
        "verify-onnx",
        help="check exported ONNX files against the PyTorch model in onnxruntime; writes ONNX/verify.json",
        description="Per file: bytes, top-1 agreement and max |logit diff| against the PyTorch 4-bit model, test "
        "accuracy, latency (batch 1) and throughput (batch 64) at --threads, onnxruntime's optimized node types, "
        "optimizations-off vs all-on agreement, and each layer's kernel time from onnxruntime's profiler; for int4 "
        "the codes read back from the file.",
    )
    p.add_argument("--checkpoint", required=True, help="the checkpoint the files were exported from")
    p.add_argument("--onnx", required=True, help="folder holding fp32.onnx, int4.onnx, int8.onnx")
    p.add_argument("--data-dir", help="CIFAR folder for the test images (default: the checkpoint's data)")
    p.add_argument("--threads", type=count_type("threads"),
                   help="onnxruntime intra-op and torch threads (default %(default)s)")
    p.add_argument("--limit", type=count_type("limit"), help="evaluate on the first N test images only (default: all)")
    p.add_argument("--agreement-images", type=count_type("agreement_images"),
                   help="images for optimizations off vs on (default %(default)s)")
    p.add_argument("--speed-rounds", type=count_type("speed_rounds"), help="interleaved timing rounds (default %(default)s)")
    p.add_argument("--throughput-runs", type=count_type("throughput_runs"),
                   help="timed batch-64 runs per file per round, back to back (default %(default)s)")
    p.add_argument("--latency-runs", type=count_type("latency_runs"),
                   help="timed batch-1 runs per file per round (default %(default)s)")
    p.add_argument("--profile-runs", type=count_type("profile_runs"),
                   help="interleaved profiled batch-64 runs per file for the per-layer kernel times (default %(default)s)")
    p.set_defaults(func=_verify_onnx, **_defaults(VerifyConfig))


def _bench(args: argparse.Namespace) -> None:
    import json

    from .bench import BenchConfig, run_bench, summary_lines

    path = run_bench(_from_options(BenchConfig, args, profiles=args.profile or [], methods=args.method or [],
                                   allow_download=not args.no_download))
    for line in summary_lines(json.loads(path.read_text())):
        print(line)
    print(f"result written to {path}")


def _add_bench(sub) -> None:
    from .bench import DEFAULT_PROFILES, TIERS, BenchConfig
    from .profiles import available_profiles

    tiers = "\n".join(f"  {t.name}: {t.summary}" for t in TIERS.values())
    p = sub.add_parser(
        "bench",
        help="measure training/eval throughput, SGEMM efficiency, memory, energy and accuracy per hardware profile",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=f"Every measurement runs in a fresh child process with the profile's threads and memory cap.\n\n"
        f"tiers:\n{tiers}\n\nprofiles (hardware_profiles/*.toml): {', '.join(available_profiles())}",
    )
    p.add_argument("--profile", action="append", metavar="NAME",
                   help=f"a profile name or .toml path; repeatable (default: {' '.join(DEFAULT_PROFILES)})")
    p.add_argument("--tier", choices=list(TIERS), help="default %(default)s")
    p.add_argument("--method", action="append", metavar="M",
                   help=f"a registered method; repeatable (default: {' '.join(DEFAULT_METHODS)}; {BASELINE} is always "
                        "measured)")
    p.add_argument("--arch", metavar="NET", help=ARCH_HELP)
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py (else $Q4BENCH_DATA, else ~/.cache/q4bench)")
    p.add_argument("--no-download", action="store_true", help="do not try to download CIFAR-10 when it is missing")
    p.add_argument("--out", help="folder for the result file (default %(default)s)")
    p.add_argument("--seed", type=count_type("seed"))
    p.add_argument("--cgroup-root", help="a delegated cgroup v2 directory for memory caps (default: detect; else rlimit)")
    p.set_defaults(func=_bench, **_defaults(BenchConfig))


def _profile(args: argparse.Namespace) -> None:
    import json

    from .measure.host import host_fingerprint

    print(json.dumps(host_fingerprint(), indent=2))


def _add_profile(sub) -> None:
    p = sub.add_parser("profile", help="print this host's fingerprint (CPU, cores, ISA flags, memory, versions)")
    p.set_defaults(func=_profile)


def _submit(args: argparse.Namespace) -> None:
    from .results import submit

    print(f"filed {args.file} as {submit(args.file, args.store)}; add it to a pull request")


def _add_submit(sub) -> None:
    from .results import DEFAULT_STORE

    p = sub.add_parser("submit", help="validate a bench result strictly and file it under reports/submitted/<host-id>/")
    p.add_argument("file", help="a result file written by q4bench bench")
    p.add_argument("--store", default=str(DEFAULT_STORE), help="default %(default)s")
    p.set_defaults(func=_submit)


def _report(args: argparse.Namespace) -> None:
    from .report import ReportSources, render_report

    report = render_report(ReportSources.from_options(args.results, args.runs, args.onnx), args.out)
    for path in report.written:
        print(f"wrote {path}")
    if report.unused:
        print(f"q4bench: note: {len(report.unused)} input file(s) not used (see \"Files not used\" in "
              f"{args.out}/report.md)", file=sys.stderr)


def _add_report(sub) -> None:
    from .report import DEFAULT_ONNX, DEFAULT_RESULTS, DEFAULT_RUNS

    p = sub.add_parser(
        "report",
        help="render bench and compare results (one host or many), run folders and verify.json files as "
        "Markdown + one HTML page",
        description="Writes OUT/report.md (figures as OUT/figures/*.png) and OUT/report.html (self-contained: "
        "figures embedded, nothing loaded from the network). Its first screen answers per host: the accuracy "
        "verdict of tathe4 against fp32 (from compare results), the step-time cost (from bench results) and "
        "what was not measured, and why. Bench result files give throughput, efficiency, memory, energy and "
        "accuracy at the tier's budget; compare results (q4bench compare) the verdict with its confidence "
        "interval; run folders (history.json) accuracy per epoch, distinct codes per layer and, for 150-epoch "
        "paper-recipe runs, the paper's accuracy claims; verify.json the ONNX figures. With no --results, "
        f"--runs or --onnx at all, the defaults are read where they exist: results {' '.join(DEFAULT_RESULTS)}; "
        f"runs {' '.join(DEFAULT_RUNS)}; onnx {' '.join(DEFAULT_ONNX)}.",
    )
    p.add_argument("--results", action="append", metavar="DIR", help="a bench or compare result file, or a folder searched for *.json; repeatable")
    p.add_argument("--runs", action="append", metavar="DIR", help="a run folder or a folder searched for history.json; repeatable")
    p.add_argument("--onnx", action="append", metavar="DIR", help="a folder searched for verify.json; repeatable")
    p.add_argument("--out", required=True, help="folder for report.md, report.html and figures/")
    p.set_defaults(func=_report)


def _results(args: argparse.Namespace) -> None:
    from . import frames

    found = frames.collect(args.paths or [p for p in frames.DEFAULT_PATHS if os.path.isdir(p)])
    for _, reason in found.skipped:
        print(f"q4bench results: skipped {reason}", file=sys.stderr)
    table = found.dataframe()
    if args.out is None:
        frames.write_stream(table, sys.stdout, args.format)
    else:
        print(f"wrote {frames.write(table, args.out, args.format)} ({len(table)} rows)", file=sys.stderr)


def _add_results(sub) -> None:
    from .frames import DEFAULT_PATHS, FORMATS

    p = sub.add_parser(
        "results", help="every bench result, compare result and run history as one tidy table (CSV, JSON or Parquet)",
        description="One row per bench arm (result, profile, method, precision), per compare run and candidate, and "
        "per history.json, with typed columns (docs/results.md lists them). Files that are neither are skipped, "
        f"each named on stderr. Default paths: {' '.join(DEFAULT_PATHS)} (those that exist).")
    p.add_argument("paths", nargs="*", metavar="PATH", help="result files or folders searched for *.json")
    p.add_argument("--format", choices=FORMATS, default="csv", help="default csv; parquet needs pyarrow")
    p.add_argument("--out", help="the file to write (replaced atomically); default: standard output")
    p.set_defaults(func=_results)


def _parity(args: argparse.Namespace) -> int:
    from .parity import ParityRequest, run_parity

    outcome = run_parity(_from_options(ParityRequest, args, executor=_executor_choice(args)))
    if not outcome.passed:
        for reason in outcome.reasons:
            print(f"q4bench parity: FAIL: {reason}", file=sys.stderr)
        return EXIT_GATE_FAILED
    return EXIT_OK


def _add_parity(sub) -> None:
    from .parity import CONTROL_CHOICES, ParityRequest

    p = sub.add_parser(
        "parity",
        help="CI gate: fp32 vs tathe4 (and a degraded control) over paired seeds side by side, ONNX verified; exit 1 on a gap",
        description="Trains the reference, the 4-bit candidate and the degraded control named in the config for its "
        "paired seeds side by side (q4bench compare's child processes), exports and verifies the candidate's ONNX "
        "files, writes OUT/parity.json, OUT/compare.json and the Markdown page, and exits 1 with the reason when the "
        "candidate's mean final-epoch gap exceeds the tolerance (computed from the seed pairs recorded in the "
        "config), when the control does not, or when a gated ONNX file disagrees with PyTorch.",
    )
    p.add_argument("--config", help="tolerance and budget (default %(default)s)")
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py (else $Q4BENCH_DATA, else ~/.cache/q4bench)")
    p.add_argument("--synthetic", action="store_true", help="generated data instead of CIFAR-10 (tests)")
    p.add_argument("--candidate", help="judge this method instead of the config's candidate (e.g. the control, to see it fail)")
    p.add_argument("--controls", choices=CONTROL_CHOICES,
                   help="which degraded controls to train: recorded (default: none whose accuracies the config records; "
                        "those are judged instead), near (the near-threshold one), or all")
    p.add_argument("--out", help="run folders, ONNX files, parity.json (default %(default)s)")
    p.add_argument("--report", help="the Markdown page (default %(default)s)")
    p.add_argument("--overwrite", action="store_true",
                   help="clear OUT's runs, onnx and result files even when parity did not write them (a compare "
                        "folder, a copy): without it such a folder is refused")
    _add_executor_options(p)
    p.set_defaults(func=_parity, **_defaults(ParityRequest))


def _add_executor_options(p) -> None:
    """--executor and the Slurm parameters, shared by compare and parity."""
    from .executors import DEFAULT_MAX_RETRIES, KINDS, ExecutorChoice

    p.add_argument("--executor", default=ExecutorChoice.kind, choices=KINDS,
                   help="where the runs train: local (child processes of this command, the default), slurm (one "
                        "sbatch job per run through submitit), submitit-local (the slurm path on this machine)")
    p.add_argument("--slurm-config", metavar="TOML", help="a file whose [slurm] table sets the options below "
                   "(keys partition, time_minutes, cpus_per_task, gpus_per_task, account, options, setup); flags win")
    p.add_argument("--slurm-partition", metavar="NAME", help="sbatch --partition")
    p.add_argument("--slurm-time", type=count_type("time_minutes"), metavar="MINUTES",
                   help="each job's time limit in minutes (required for slurm); a run that outlives it is submitted "
                        "again and resumes")
    p.add_argument("--slurm-cpus-per-task", type=count_type("cpus_per_task"), metavar="N", help="default: threads x ranks per run")
    p.add_argument("--slurm-gpus-per-task", type=count_type("gpus_per_task"), metavar="N", help="default: 1 with --device cuda")
    p.add_argument("--slurm-account", metavar="NAME", help="sbatch --account")
    p.add_argument("--slurm-option", action="append", metavar="NAME=VALUE",
                   help="another sbatch option, e.g. qos=high or exclusive; repeatable")
    p.add_argument("--slurm-setup", action="append", metavar="LINE",
                   help="a shell line run before each job, e.g. 'module load python'; repeatable")
    p.add_argument("--max-retries", type=count_type("max_retries"), default=DEFAULT_MAX_RETRIES, metavar="N",
                   help=f"submit a lost job (killed, preempted, node failure) again up to N times in a row without "
                        f"a newly finished epoch (default {DEFAULT_MAX_RETRIES})")


def _executor_choice(args: argparse.Namespace):
    from .executors import ExecutorChoice, SlurmSettings, load_slurm_section, parse_option

    base = load_slurm_section(args.slurm_config) if args.slurm_config else SlurmSettings()
    settings = base.merged(partition=args.slurm_partition, time_minutes=args.slurm_time,
                           cpus_per_task=args.slurm_cpus_per_task, gpus_per_task=args.slurm_gpus_per_task,
                           account=args.slurm_account, options=tuple(map(parse_option, args.slurm_option or ())),
                           setup=tuple(args.slurm_setup or ()))
    return ExecutorChoice(args.executor, settings, args.max_retries)


def _compare(args: argparse.Namespace) -> None:
    from .compare import CompareRequest, run_compare

    run_compare(_from_options(CompareRequest, args, methods=tuple(args.method or ()), executor=_executor_choice(args)))


def _add_compare(sub) -> None:
    from .compare import CompareRequest

    p = sub.add_parser(
        "compare",
        help="train a reference and candidates for N paired seeds in parallel children; gap, 95%% CI, TOST, verdict",
        description="Seed k of every method starts from the same weights, data order and augmentation, so seeds "
        "pair. Prints its plan (runs, budget, threads, children, estimated time) before anything starts, trains "
        "every run in a child process (OUT/runs/<method>-seed<k>/), and writes OUT/compare.json. Resumable: rerun "
        "the same command after a kill and it continues; a different command on the same OUT is refused (more "
        "--seeds, another --margin or --parallel are allowed).",
    )
    p.add_argument("--method", action="append", metavar="M", help="a candidate method; repeatable (e.g. tathe4)")
    p.add_argument("--reference", help="the reference method (default %(default)s)")
    p.add_argument("--seeds", type=count_type("seeds"), help="paired seeds per method (default %(default)s): 0..N-1")
    p.add_argument("--first-seed", type=count_type("seed"),
                   help="start the seeds here instead of 0 (S..S+N-1), e.g. fresh seeds beside a study made elsewhere")
    # Exactly one of these two; checked by CompareRequest, which says so in one line.
    p.add_argument("--epochs", type=count_type("epochs"), help="epochs per run")
    p.add_argument("--hours", type=number_type(0, MAX_HOURS),
                        help="a time box: converted to epochs per run from step times measured in children first")
    p.add_argument("--arch", metavar="NET", help=ARCH_HELP)
    p.add_argument("--recipe", help="training recipe (default %(default)s)")
    p.add_argument("--subset", type=count_type("subset"), help="train on the first N training images")
    p.add_argument("--batch-size", type=count_type("batch_size"), help="override the recipe's batch size")
    p.add_argument("--synthetic", action="store_true", help="generated data instead of CIFAR-10 (tests)")
    p.add_argument("--data-dir", help="folder holding cifar-10-batches-py (else $Q4BENCH_DATA, else ~/.cache/q4bench)")
    p.add_argument("--device", help="cpu or cuda (default %(default)s)")
    p.add_argument("--precision", help="fp32 or bf16 (autocast; default %(default)s)")
    p.add_argument("--parallel", type=count_type("parallel"),
                   help="children at once (default: cores // threads on cpu, 2 sharing the GPU on cuda)")
    p.add_argument("--threads", type=count_type("threads"), help="torch threads per child (default 1 on cpu, cores // parallel on cuda)")
    p.add_argument("--ranks-per-run", type=count_type("ranks_per_run"),
                   help="train each run as a torchrun job of N DDP ranks over gloo (default %(default)s: one process)")
    p.add_argument("--margin", type=number_type(0, 100), help="equivalence margin in accuracy points (default %(default)s)")
    p.add_argument("--out", help="folder for the runs and compare.json (default %(default)s; "
                   "with --executor slurm on storage every node shares)")
    _add_executor_options(p)
    p.set_defaults(func=_compare, **_defaults(CompareRequest))


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="q4bench", description="Does 4-bit training match full precision on this machine, and at what cost?"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    _add_train(sub)
    _add_export(sub)
    _add_verify_onnx(sub)
    _add_bench(sub)
    _add_profile(sub)
    _add_submit(sub)
    _add_report(sub)
    _add_parity(sub)
    _add_compare(sub)
    _add_results(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        parser = build_parser()  # imports the method registry, and with it $Q4BENCH_PLUGINS
    except UserError as exc:
        print(f"q4bench: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a one-line usage error (2): a status, as for every other outcome
        return exc.code if isinstance(exc.code, int) else EXIT_USER_ERROR
    try:
        status = args.func(args)  # None: success; a command that can say no (the gate) returns its status
    except UserError as exc:
        print(f"q4bench: error: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("q4bench: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as exc:
        # A full disk outside write_atomic (a log, a library's own file): still one line, not a traceback.
        full = disk_full(exc)
        if full is None:
            raise
        print(f"q4bench: error: {disk_full_error(full.filename or 'a file', full)}", file=sys.stderr)
        return EXIT_USER_ERROR
    return EXIT_OK if status is None else status


if __name__ == "__main__":
    sys.exit(main())
