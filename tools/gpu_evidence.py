"""One prepared GPU session's worth of evidence, run by `tools/gpu_evidence.sh` on a lent GPU machine.

What it settles (issues 18, 12, 15 of the tracker):
  - the paper's full budget: `--recipe paper`, 150 epochs, batch 128, full CIFAR-10 (JPEG copy), fp32 with
    TF32 off, for fp32 and tathe4, seed 0, side by side on the one GPU;
  - the converged short recipe's seed spread at the CI gate's budget (1 epoch, all 50,000 images), the
    degraded control at that budget, bf16 against fp32 at that budget, a 5-seed x 3-epoch comparison, and
    time to accuracy at 5 and 15 epochs.
A 2-epoch probe of fp32 and tathe4 (paper recipe, each alone on the GPU) runs first and prints the projected
total, so an overlong plan shows itself in the first minute.

Every job is a plain `python -m suite train ... --device cuda` child writing its own run folder (history,
predictions, checkpoint each epoch), so rerunning this script resumes whatever a deadline cut off. The
histories, predictions and logs are bundled into OUT/evidence.tar.gz every BUNDLE_EVERY_S seconds (write,
then rename), so even a killed call brings back everything finished so far.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

BUNDLE_EVERY_S = 20
GATE_SEEDS = range(10)  # the gate's budget at 10 seed pairs: its tolerance needs at least 6
COMPARE_SEEDS = range(5)


@dataclass(frozen=True)
class Job:
    name: str
    method: str
    recipe: str
    epochs: int
    seed: int
    precision: str = "fp32"
    lane: str = "side"  # "paper": started at once, own process; "side": from the queue, SIDE_WORKERS at a time



def plan(dry_run: bool = False) -> tuple[list[Job], list[Job], list[Job]]:
    """(probe, paper, side queue in priority order). The order is the value per GPU second: the gate's
    spread decides CI's tolerance; the 5-seed comparison is the report's verdict."""
    probe = [Job(f"probe-paper-{m}", m, "paper", 2, 0, lane="probe") for m in ("fp32", "tathe4")]
    paper = [Job(f"paper-{m}-seed0", m, "paper", 150, 0, lane="paper") for m in ("fp32", "tathe4")]
    side: list[Job] = []
    for seed in GATE_SEEDS:
        side += [Job(f"gate-short1-{m}-seed{seed}", m, "short", 1, seed) for m in ("fp32", "tathe4")]
    side += [Job(f"gate-short1-tathe4-2bit-seed{seed}", "tathe4-2bit", "short", 1, seed) for seed in range(3)]
    for seed in COMPARE_SEEDS:
        side += [Job(f"compare-short3-{m}-seed{seed}", m, "short", 3, seed) for m in ("fp32", "tathe4")]
    side += [Job(f"tta-short5-{m}-seed0", m, "short", 5, 0) for m in ("fp32", "tathe4")]
    for seed in range(3):
        side += [Job(f"bf16-short1-{m}-seed{seed}", m, "short", 1, seed, precision="bf16") for m in ("fp32", "tathe4")]
    side += [Job(f"tta-short15-{m}-seed0", m, "short", 15, 0) for m in ("fp32", "tathe4")]
    if dry_run:  # the orchestration end to end on a CPU: one or two epochs of tiny synthetic data per job
        shrink = lambda jobs: [replace(j, epochs=min(j.epochs, 2)) for j in jobs]  # noqa: E731
        return shrink(probe), shrink(paper), shrink(side[:6])
    return probe, paper, side


def status(out: Path, job: Job) -> str:
    """done | partial | new, from the run folder alone."""
    history = out / "history.json"
    if history.exists():
        try:
            done = len(json.loads(history.read_text())["epochs"])
        except (ValueError, KeyError):
            done = 0
        if done >= job.epochs:
            return "done"
    return "partial" if (out / "checkpoint.pt").exists() else "new"


def bundle(runs: Path, dest: Path, extra: dict) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    tmp = dest / ".evidence.tar.gz.tmp"
    (runs / "schedule.json").write_text(json.dumps(extra, indent=2))
    with tarfile.open(tmp, "w:gz") as tar:
        for path in sorted(runs.rglob("*")):
            if path.is_file() and path.suffix != ".pt" and ".tmp" not in path.name:
                tar.add(path, arcname=str(path.relative_to(runs.parent)))
    os.replace(tmp, dest / "evidence.tar.gz")


def host_facts(dry_run: bool = False) -> dict:
    import torch

    if dry_run:
        return {"gpu": "none (dry run)", "torch": torch.__version__, "cuda": None,
                "commit": os.environ.get("Q4BENCH_COMMIT", "unknown")}
    facts = {"torch": torch.__version__, "cuda": torch.version.cuda, "cudnn": torch.backends.cudnn.version(),
             "gpu": torch.cuda.get_device_name(0), "gpu_count": torch.cuda.device_count(),
             "gpu_memory_bytes": torch.cuda.get_device_properties(0).total_memory,
             "cpu_count": os.cpu_count(), "commit": os.environ.get("Q4BENCH_COMMIT", "unknown")}
    try:
        facts["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,power.limit,clocks.max.sm,memory.total",
             "--format=csv,noheader"], capture_output=True, text=True, timeout=20).stdout.strip()
    except (OSError, subprocess.SubprocessError) as exc:
        facts["nvidia_smi"] = f"unavailable ({exc})"
    from suite.measure.host import host_fingerprint

    facts["host"] = host_fingerprint()
    return facts


SHARE = 3.0  # a side job's epoch takes about this many alone-epochs while the GPU is shared (a guess, erring long)


def run_jobs(jobs: list[Job], data_dir: str, runs: Path, deadline_unix: float, alone_epoch_s: float,
             dry_run: bool = False) -> None:
    """A worker: its jobs one after another in this process (CUDA and the data load once per job, not a new
    interpreter each), skipping a job that could not end before the deadline."""
    from suite.train import TrainConfig, train

    for job in jobs:
        out = runs / job.name
        state = status(out, job)
        if state == "done":
            continue
        # the paper runs always start (a cut run resumes on the next call); side jobs only if they can end in time
        if job.lane == "side" and time.time() + job.epochs * alone_epoch_s * SHARE > deadline_unix:
            print(f"[{job.name}] skipped: would not end before the deadline", flush=True)
            continue
        config = TrainConfig(method=job.method, recipe=job.recipe, epochs=job.epochs, seed=job.seed,
                             data_dir=None if dry_run else data_dir, out=str(out), resume=state == "partial",
                             device="cpu" if dry_run else "cuda", precision=job.precision, synthetic=dry_run,
                             subset=256 if dry_run else None, threads=1 if dry_run else None)
        try:
            train(config, log=lambda line, name=job.name: print(f"[{name}] {line}", flush=True))
        except Exception as exc:  # one failed job must not stop the others; the log says why
            print(f"[{job.name}] FAILED: {type(exc).__name__}: {exc}", flush=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--runs", default="runs/gpu", help="run folders (kept on the machine between calls)")
    parser.add_argument("--bundle-dir", help="where evidence.tar.gz is refreshed ($OUT)")
    parser.add_argument("--deadline-s", type=float, help="stop everything this many seconds in")
    parser.add_argument("--side-workers", type=int, default=2)
    parser.add_argument("--no-side", action="store_true", help="only the probe and the paper runs")
    parser.add_argument("--dry-run", action="store_true", help="tiny synthetic jobs on the CPU (tests the script)")
    parser.add_argument("--worker", help=argparse.SUPPRESS)  # internal: comma-separated job names
    parser.add_argument("--deadline-unix", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--alone-epoch-s", type=float, default=2.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    probe, paper, side = plan(args.dry_run)
    by_name = {job.name: job for job in probe + paper + side}
    runs = Path(args.runs)
    if args.worker is not None:
        names = [n for n in args.worker.split(",") if n]
        run_jobs([by_name[n] for n in names], args.data_dir, runs, args.deadline_unix, args.alone_epoch_s,
                 args.dry_run)
        return 0
    if args.bundle_dir is None or args.deadline_s is None:
        parser.error("--bundle-dir and --deadline-s are required")

    t0, t0_unix = time.monotonic(), time.time()
    deadline_unix = t0_unix + args.deadline_s
    margin = 25.0  # seconds kept for stopping children, the last bundle and the transfer
    runs.mkdir(parents=True, exist_ok=True)
    bundle_dir = Path(args.bundle_dir)
    facts = host_facts(args.dry_run)
    (runs / "host.json").write_text(json.dumps(facts, indent=2))
    print(f"host: {facts['gpu']} | torch {facts['torch']} CUDA {facts['cuda']} | commit {facts['commit']}", flush=True)
    log: dict = {"started_unix": t0_unix, "deadline_s": args.deadline_s, "events": [], "plan": {
        "probe": [asdict(j) for j in probe], "paper": [asdict(j) for j in paper], "side": [asdict(j) for j in side]}}
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"}

    def elapsed() -> float:
        return time.monotonic() - t0

    def start_worker(name: str, jobs: list[Job], alone_epoch_s: float) -> subprocess.Popen:
        logf = open(runs / f"{name}.log", "a")
        cmd = [sys.executable, __file__, "--data-dir", args.data_dir, "--runs", str(runs), "--worker",
               ",".join(j.name for j in jobs), "--deadline-unix", str(deadline_unix - margin),
               "--alone-epoch-s", str(alone_epoch_s)] + (["--dry-run"] if args.dry_run else [])
        log["events"].append({"t": round(elapsed(), 1), "start": name, "jobs": [j.name for j in jobs]})
        return subprocess.Popen(cmd, stdout=logf, stderr=subprocess.STDOUT, env=env)

    # 1. The probe, each method alone on the GPU: seconds per epoch (epoch 1 includes cuDNN's autotuning).
    start_worker("probe", probe, 2.0).wait()
    per_epoch = {}
    for job in probe:
        history = json.loads((runs / job.name / "history.json").read_text())
        per_epoch[job.method] = history["epochs"][-1]["seconds"]
        print(f"probe {job.method}: " + ", ".join(
            f"epoch {e['epoch']} {e['seconds']:.2f}s ({e['images_per_s']:.0f} img/s) test {e['test_acc']:.2f}%"
            for e in history["epochs"]), flush=True)
    alone = max(per_epoch.values())
    serial = 150 * sum(per_epoch.values())
    print(f"projection: 150 paper epochs each of fp32 + tathe4 = {serial:.0f} s of GPU one after the other (train "
          f"time only); deadline {args.deadline_s:.0f} s, {elapsed():.0f} s used", flush=True)
    log["probe_seconds_per_epoch"], log["projection_serial_s"] = per_epoch, serial
    bundle(runs, bundle_dir, log)

    # 2. The paper pair, one process each, and the side queue dealt round-robin to the side workers.
    running = {f"paper-{i}": start_worker(job.name, [job], alone) for i, job in enumerate(paper)}
    if not args.no_side:
        for w in range(args.side_workers):
            running[f"side-{w}"] = start_worker(f"side-{w}", side[w :: args.side_workers], alone)
    last_bundle = elapsed()
    while running:
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                log["events"].append({"t": round(elapsed(), 1), "end": name, "rc": proc.returncode})
                print(f"[{elapsed():5.0f}s] {name} ended rc={proc.returncode}", flush=True)
                del running[name]
        if elapsed() - last_bundle > BUNDLE_EVERY_S:
            bundle(runs, bundle_dir, log)
            last_bundle = elapsed()
        if running and elapsed() > args.deadline_s - margin:
            for name, proc in running.items():
                proc.terminate()  # each run keeps its last finished epoch's checkpoint; a rerun resumes it
                log["events"].append({"t": round(elapsed(), 1), "cut_at_deadline": name})
                print(f"[{elapsed():5.0f}s] deadline: stopped {name} (resumable)", flush=True)
            for proc in running.values():
                proc.wait(timeout=20)
            break
        time.sleep(2)
    bundle(runs, bundle_dir, log)
    for job in probe + paper + side:
        history = runs / job.name / "history.json"
        if history.exists():
            h = json.loads(history.read_text())
            eps = h["epochs"]
            print(f"{job.name}: {len(eps)}/{job.epochs} ep, final {h['final_test_acc']}, best {h['best_test_acc']} "
                  f"@{h['best_epoch']}, {sum(e['seconds'] for e in eps):.0f}s", flush=True)
    print(f"total {elapsed():.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
