"""Training under torchrun with DDP over gloo (suite/distributed.py): sharding, identical 4-bit scales on every
rank, the loss trajectory against one process, rank-0-only writes, resume, a two-node job simulated on one
machine, and a rank killed mid-epoch. The multi-process tests start real torchrun jobs on synthetic data."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from suite import data as datamod
from suite import distributed as D
from suite.errors import UserError

ROOT = Path(__file__).resolve().parent.parent
PROBE = Path(__file__).with_name("ddp_probe.py")
TORCHRUN = [sys.executable, "-m", "torch.distributed.run"]


def _env() -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(cmd: list[str], cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _train_args(out: Path, *extra: str) -> list[str]:
    return ["-m", "suite", "train", "--method", "tathe4", "--synthetic", "--subset", "512", "--out", str(out), *extra]


def _our_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("q4bench: error:")]


# ---------------------------------------------------------------------------------------------
# In-process pieces


def test_world_from_env_reads_torchruns_variables():
    assert D.world_from_env({}) == D.World()
    world = D.world_from_env({"RANK": "3", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "2"})
    assert (world.rank, world.size, world.local_rank, world.local_size, world.nodes) == (3, 4, 1, 2, 2)
    assert world.distributed and not world.is_main
    with pytest.raises(UserError, match="rank 4 of 4"):
        D.world_from_env({"RANK": "4", "WORLD_SIZE": "4"})


def test_threads_split_the_cores_between_local_ranks():
    assert D.threads_per_rank(D.World(0, 2, 0, 2), cores=2) == 1
    assert D.threads_per_rank(D.World(0, 4, 0, 2), cores=16) == 8  # 2 nodes x 2 local ranks
    assert D.threads_per_rank(D.World(0, 8, 0, 8), cores=2) == 1  # never 0


def test_a_global_batch_the_ranks_cannot_split_is_refused():
    assert D.local_batch_size(128, D.World(0, 2, 0, 2)) == 64
    with pytest.raises(UserError, match="128 images does not split evenly over 3 ranks"):
        D.local_batch_size(128, D.World(0, 3, 0, 3))


def test_eval_shares_cover_the_test_set_once():
    for total, size in [(10_000, 2), (100, 3), (5, 4)]:
        covered = [i for r in range(size) for i in range(*D.eval_share(r, size, total))]
        assert covered == list(range(total))


def test_rank_shards_are_the_single_process_batches_split_image_for_image():
    """Every rank draws the epoch's order and augmentation; its shard of global batch k holds positions
    rank, rank + ranks, ... of that batch, with the same crop and flip as one process gives those images."""
    split = datamod.Split(torch.randint(0, 256, (300, 3, 32, 32), dtype=torch.uint8), torch.arange(300) % 10)
    single = list(datamod.batches(split, 64, torch.Generator().manual_seed(5), True))
    shards = [list(datamod.batches(split, 64, torch.Generator().manual_seed(5), True, (r, 2))) for r in range(2)]
    assert len(single) == len(shards[0]) == len(shards[1]) == datamod.num_train_batches(300, 64, 2)
    for k, (images, labels) in enumerate(single):
        for r in range(2):
            assert torch.equal(shards[r][k][0], images[r::2]) and torch.equal(shards[r][k][1], labels[r::2])


def test_a_tail_batch_too_small_for_every_rank_is_left_out_everywhere():
    assert datamod.num_train_batches(130, 64, 1) == 3  # a tail of 2 images: BatchNorm still has 2
    assert datamod.num_train_batches(130, 64, 2) == 2  # 1 image per rank: dropped on every rank
    split = datamod.Split(torch.zeros(130, 3, 32, 32, dtype=torch.uint8), torch.zeros(130, dtype=torch.int64))
    counts = [len(list(datamod.batches(split, 64, torch.Generator().manual_seed(0), True, (r, 2)))) for r in (0, 1)]
    assert counts == [2, 2]


# ---------------------------------------------------------------------------------------------
# Real torchrun jobs (synthetic data, 1 thread per rank)


@pytest.fixture(scope="module")
def trajectories(tmp_path_factory):
    """Four tathe4 steps in float64, global batch 32: one process (BatchNorm over 32), one process with
    BatchNorm over the two interleaved halves, and two DDP ranks of 16 images each."""
    tmp = tmp_path_factory.mktemp("ddp-probe")
    one, ghost, two = tmp / "one.json", tmp / "ghost.json", tmp / "two.json"
    jobs = [
        [sys.executable, str(PROBE), "--out", str(one)],
        [sys.executable, str(PROBE), "--out", str(ghost), "--ghost", "2"],
        TORCHRUN + ["--standalone", "--nproc-per-node", "2", str(PROBE), "--out", str(two)],
    ]
    procs = [subprocess.Popen(job, cwd=tmp, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for job in jobs]
    for proc in procs:
        output, _ = proc.communicate(timeout=300)
        assert proc.returncode == 0, output[-3000:]
    return [json.loads(p.read_text()) for p in (one, ghost, two)]


def test_two_ranks_follow_one_process_step_for_step(trajectories):
    """Stated tolerance: DDP's trajectory equals one process that normalises the same sub-batches to 1e-9
    (relative, float64: only the order of float sums differs). Against one process normalising all 32 images
    together, the first step (identical weights, so BatchNorm's statistics are the only difference) agrees
    within 5%; later steps drift further apart on this tiny synthetic set, which is why resume refuses
    another world size."""
    one, ghost, two = trajectories
    assert two["world_size"] == 2 and len(two["losses"]) == len(ghost["losses"]) == 4
    for a, b in zip(two["losses"], ghost["losses"]):
        assert abs(a - b) <= 1e-9 * abs(b), (two["losses"], ghost["losses"])
    assert abs(two["losses"][0] - one["losses"][0]) <= 0.05 * one["losses"][0]
    assert two["losses"][0] != one["losses"][0]  # the BatchNorm difference is real, and visible


def test_every_rank_computes_the_same_4bit_scales(trajectories):
    two = trajectories[2]
    assert two["layers"] == 8 and two["scales_identical"] is True


@pytest.mark.slow
def test_torchrun_train_writes_from_rank_0_and_resumes_on_the_same_world_size_only(tmp_path):
    out = tmp_path / "ddp"
    first = _run(TORCHRUN + ["--standalone", "--nproc-per-node", "2"] + _train_args(out, "--epochs", "1"), tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert first.stdout.count("training tathe4") == 1  # one log per job: rank 0's
    history = json.loads((out / "history.json").read_text())
    assert history["world_size"] == 2 and history["distributed"]["batch_per_rank"] == 64
    assert history["distributed"]["threads_per_rank"] == 1 and len(history["epochs"]) == 1
    assert sorted(p.name for p in out.iterdir() if p.name != ".q4bench.lock") == [
        "checkpoint.pt", "history.json", "predictions.npy"]

    alone = _run([sys.executable] + _train_args(out, "--epochs", "2", "--resume"), tmp_path)
    assert alone.returncode == 2 and _our_lines(alone.stderr) == [alone.stderr.strip()]
    assert "cannot resume on 1 process(es): the run was trained on 2" in alone.stderr

    again = _run(TORCHRUN + ["--standalone", "--nproc-per-node", "2"] + _train_args(out, "--epochs", "2", "--resume"),
                 tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    history = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert history["resumed_from"][0]["after_epoch"] == 1


def test_only_rank_0_writes(tmp_path):
    """Every file write of train goes through suite.atomic; a probe records which rank called it."""
    probe = tmp_path / "writes_probe.py"
    probe.write_text(
        "import os, sys\n"
        "import suite.atomic as atomic, suite.train as train\n"
        "real = atomic.write_atomic\n"
        "def spy(path, *a, **k):\n"
        "    with open(os.environ['SPY_DIR'] + '/rank' + os.environ['RANK'], 'a') as f:\n"
        "        f.write(str(path) + '\\n')\n"
        "    return real(path, *a, **k)\n"
        "atomic.write_atomic = train.write_atomic = spy\n"
        "import suite.cli\n"
        "sys.exit(suite.cli.main(sys.argv[1:]))\n"
    )
    spy = tmp_path / "spy"
    spy.mkdir()
    env = dict(_env(), SPY_DIR=str(spy))
    argv = ["train", "--method", "tathe4", "--synthetic", "--subset", "256", "--epochs", "1", "--out", str(tmp_path / "r")]
    done = subprocess.run(TORCHRUN + ["--standalone", "--nproc-per-node", "2", str(probe)] + argv, cwd=tmp_path,
                          env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(p.name for p in spy.iterdir()) == ["rank0"]
    written = (spy / "rank0").read_text().split()
    assert {Path(p).name for p in written} == {"checkpoint.pt", "predictions.npy", "history.json"}


@pytest.mark.slow
def test_two_nodes_simulated_with_two_torchrun_invocations(tmp_path):
    """--nnodes 2, one torchrun per node rank, c10d rendezvous on 127.0.0.1: one job of 2 ranks."""
    port, out = _free_port(), tmp_path / "two-nodes"
    node = TORCHRUN + ["--nnodes", "2", "--nproc-per-node", "1", "--rdzv-backend", "c10d",
                       "--rdzv-endpoint", f"127.0.0.1:{port}", "--rdzv-id", "q4bench-test"]
    nodes = [subprocess.Popen(node + _train_args(out, "--epochs", "1"), cwd=tmp_path, env=_env(),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in nodes]
    assert [p.returncode for p in nodes] == [0, 0], "\n".join(o[-2000:] for o in outputs)
    history = json.loads((out / "history.json").read_text())
    assert history["distributed"]["nodes"] == 2 and history["distributed"]["local_ranks"] == 1
    assert history["world_size"] == 2 and len(history["epochs"]) == 1


def _rank_pid(launcher: subprocess.Popen, rank: int) -> int | None:
    import psutil

    for child in psutil.Process(launcher.pid).children(recursive=True):
        try:
            if child.environ().get("RANK") == str(rank):
                return child.pid
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return None


@pytest.mark.slow
def test_a_killed_rank_ends_the_job_with_one_line_and_the_run_resumes(tmp_path):
    out = tmp_path / "killed"
    cmd = TORCHRUN + ["--standalone", "--nproc-per-node", "2"] + _train_args(out, "--epochs", "3")
    job = subprocess.Popen(cmd, cwd=tmp_path, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not (out / "history.json").exists():  # epoch 1 saved: kill during epoch 2
        assert job.poll() is None and time.monotonic() < deadline, "the job ended before its first epoch"
        time.sleep(0.2)
    victim = _rank_pid(job, 1)
    assert victim is not None
    os.kill(victim, signal.SIGKILL)
    _, stderr = job.communicate(timeout=120)
    assert job.returncode != 0
    ours = _our_lines(stderr)
    assert len(ours) == 1, stderr[-4000:]  # rank 0 says it once; rank 1 died silently
    assert ours[0].startswith("q4bench: error: rank 0 of 2: ") and "--resume" in ours[0]
    assert 'suite/' not in "".join(l for l in stderr.splitlines() if l.lstrip().startswith("File "))  # no traceback of ours
    saved = json.loads((out / "history.json").read_text())
    assert len(saved["epochs"]) >= 1

    resumed = _run(cmd + ["--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    history = json.loads((out / "history.json").read_text())
    assert [e["epoch"] for e in history["epochs"]] == [1, 2, 3]


# ---------------------------------------------------------------------------------------------
# The bench's scaling measurement (suite/scaling.py, suite/scaling_child.py)


def test_scaling_plan_takes_a_power_of_two_up_to_the_cores():
    from suite.scaling import plan_scaling

    assert plan_scaling(1, 3, 2) == (None, "1 usable core: there is nothing to scale to")
    assert [plan_scaling(c, 3, 2)[0].processes for c in (2, 3, 6, 64)] == [2, 2, 4, 8]


def test_scaling_formulas_against_hand_computed_values():
    """Two rounds: T1 2.0/2.2, T1(all threads) 1.2/1.1, TN 1.25/1.1, TN without all-reduce 1.0/1.0, N = 2.
    speedup 1.6/2.0 -> 1.8; efficiency 0.8/1.0 -> 0.9; all-reduce share 0.2/0.0909 -> 0.14545;
    against one process on all threads 0.96/1.0 -> 0.98 (medians of per-round ratios)."""
    from suite.scaling import ScalingPlan, summarize

    raw = {"world_size": 2, "local_batch": 64, "threads_per_rank": 1, "all_threads": 2,
           "orders": [["one", "one_all", "ddp", "ddp_no_sync"]] * 2,
           "step_seconds": {"one": [2.0, 2.2], "one_all": [1.2, 1.1], "ddp": [1.25, 1.1], "ddp_no_sync": [1.0, 1.0]}}
    entry = summarize(ScalingPlan(2, 1), raw)
    assert entry["speedup"] == pytest.approx(1.8)
    assert entry["efficiency"] == pytest.approx(0.9)
    assert entry["ranges"]["efficiency"] == pytest.approx([0.8, 1.0])
    assert entry["allreduce_share"] == pytest.approx((0.2 + 1 - 1 / 1.1) / 2)
    assert entry["vs_one_process_all_cores"] == pytest.approx(0.98)
    assert entry["step_seconds"]["ddp"] == pytest.approx(1.175)


def test_scaling_job_runs_under_torchrun_and_fits_the_result_schema(tmp_path):
    import jsonschema

    from suite.report import sections
    from suite.report.document import Kind
    from suite.results import schema as result_schema
    from suite.scaling import ScalingPlan, measure_scaling

    entry = measure_scaling(ScalingPlan(2, 1, "fp32", global_batch=16, rounds=1, steps_per_window=1), tmp_path,
                            timeout_s=240)
    assert entry["status"] == "ok", entry
    schema = result_schema()
    sub = {"$id": schema["$id"], "$defs": schema["$defs"], "$ref": "#/$defs/scaling"}  # the $id resolves its refs
    jsonschema.Draft202012Validator(sub).validate(entry)
    assert set(entry["step_seconds"]) == {"one", "one_all", "ddp", "ddp_no_sync"}
    assert all(v > 0 for v in entry["step_seconds"].values()) and entry["batch_per_process"] == 8
    assert entry["efficiency"] == pytest.approx(entry["step_seconds"]["one"] / (2 * entry["step_seconds"]["ddp"]))

    class Result:  # the fields section_scaling reads of a bench result file
        host_id, created, real_data, fixture, arch = "this-host", "2026-11-26T17:00:00Z", False, False, "vgg4bit"
        data = {"scaling": entry, "data": {"kind": "synthetic"}, "host": {"host_id": "this-host", "cpu_model": "test cpu"}}

    from suite.report.inputs import Inputs

    table = sections.section_scaling(Inputs(results=[Result()])).tables()["scaling"]
    cell = table.column("efficiency T1/(N TN) (derived)")[0]
    assert cell.kind is Kind.DERIVED and cell.value == pytest.approx(entry["efficiency"])


@pytest.mark.slow
def test_compare_trains_each_run_as_a_torchrun_job(tmp_path):
    out = tmp_path / "cmp"
    done = _run([sys.executable, "-m", "suite", "compare", "--method", "tathe4", "--seeds", "1", "--epochs", "1",
                 "--arch", "simpleresnet4bit", "--synthetic", "--subset", "256", "--ranks-per-run", "2", "--out", str(out)],
                tmp_path, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "each run a torchrun job of 2 DDP ranks" in done.stdout
    for run in ("fp32-seed0", "tathe4-seed0"):
        history = json.loads((out / "runs" / run / "history.json").read_text())
        assert history["world_size"] == 2 and history["distributed"]["batch_per_rank"] == 64
    result = json.loads((out / "compare.json").read_text())
    assert [c["candidate"] for c in result["comparisons"]] == ["tathe4"]


def test_compare_refuses_to_run_inside_a_torchrun_job(monkeypatch):
    from suite.compare import CompareRequest, validate

    monkeypatch.setenv("WORLD_SIZE", "2")
    with pytest.raises(UserError, match="do not start it under torchrun"):
        validate(CompareRequest(methods=("tathe4",), epochs=1, synthetic=True))
