"""compare's executors: local children, submitit-local (the cluster path on this machine) and slurm (its sbatch
script generated and read back without a cluster: fake sbatch, srun, sacct and scancel on PATH); the study loop
with a scripted executor (re-attach, lost jobs, failures that stop the study); the cluster extra missing. The
end-to-end studies through submitit-local are slow (each trains real runs)."""

import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from suite import compare as comparemod
from suite.cli import _executor_choice, build_parser, main as cli_main
from suite.cluster import SubmititExecutor, TrainJob
from suite.compare import CompareRequest, Run, all_runs, execute, train_command, validate
from suite.errors import UserError
from suite.executors import (DONE, FAILED, LOST, QUEUED, RUNNING, UNSEEN, Executor, ExecutorChoice, JobSpec, JobState,
                             LocalPool, Ticket)

REPO = Path(__file__).resolve().parent.parent


# ---------------------------------------------------------------------------------------------
# The extra and the options


def test_a_missing_cluster_extra_is_one_line_naming_the_install(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(sys.modules, "submitit", None)  # import submitit now raises ImportError
    code = cli_main(["compare", "--executor", "submitit-local", "--method", "tathe4", "--epochs", "1", "--synthetic",
                     "--out", str(tmp_path / "cmp")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert "--executor submitit-local needs submitit, an optional extra: pip install 'q4bench[cluster]'" in err
    assert not (tmp_path / "cmp").exists()  # refused before anything was written


@pytest.mark.parametrize("args, message", [
    (["--executor", "slurm"], "--executor slurm needs --slurm-time MINUTES"),
    (["--executor", "slurm", "--slurm-time", "0"], "argument --slurm-time: must be from 1 to"),
    (["--executor", "slurm", "--slurm-time", "5", "--slurm-option", "array=0-3"], "--slurm-option array: set by q4bench"),
    (["--executor", "slurm", "--slurm-time", "5", "--slurm-option", "Bad Name"], "--slurm-option Bad Name: not an sbatch"),
    (["--executor", "nope"], "argument --executor: invalid choice: 'nope'"),
    (["--max-retries", "-1"], "argument --max-retries: must be from 0 to 100, got -1"),
    (["--slurm-partition", "gpu"], "--slurm-* options and --slurm-config apply to --executor slurm"),
])
def test_bad_executor_options_are_one_line_errors(args, message, tmp_path, capsys):
    code = cli_main(["compare", "--method", "tathe4", "--epochs", "1", "--synthetic", *args, "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and err.count("\n") == 1, err
    assert not (tmp_path / "c").exists()


def test_a_bad_slurm_section_is_one_line(tmp_path, capsys):
    config = tmp_path / "slurm.toml"
    config.write_text('[slurm]\npartition = "gpu"\ntime = 60\n')
    code = cli_main(["compare", "--method", "tathe4", "--epochs", "1", "--synthetic", "--executor", "slurm",
                     "--slurm-config", str(config), "--out", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert code == 2 and f"{config} [slurm]: unknown key 'time'; known keys: account, cpus_per_task, gpus_per_task, " \
                         "options, partition, setup, time_minutes\n" in err, err
    config.write_text('[slurm]\ntime_minutes = 60\noptions = { array = "0-3" }\nsetup = ["module load x", 3]\n')
    for replaced, message in ((None, "key 'options' array: set by q4bench itself"), ("array", "key 'setup' must be text, got 3")):
        if replaced:
            config.write_text(config.read_text().replace(f"{replaced} =", "qos ="))
        code = cli_main(["compare", "--method", "tathe4", "--epochs", "1", "--synthetic", "--executor", "slurm",
                         "--slurm-config", str(config), "--out", str(tmp_path / "c")])
        err = capsys.readouterr().err
        assert code == 2 and err.startswith(f"q4bench: error: {config} [slurm]: {message}") and err.count("\n") == 1, err


# ---------------------------------------------------------------------------------------------
# Slurm without a cluster: the sbatch script submitit would submit, and the states sacct reports


def _fake_slurm(tmp_path, monkeypatch) -> Path:
    """srun (present), sbatch (answers job 4242), sacct (prints SACCT.txt) and scancel (appends to scancel.txt)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    scripts = {"srun": "exit 0", "sbatch": 'echo "Submitted batch job 4242"',
               "sacct": f'cat {tmp_path / "SACCT.txt"}', "scancel": f'echo "$@" >> {tmp_path / "scancel.txt"}'}
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return bin_dir


def _slurm_choice(tmp_path) -> ExecutorChoice:
    """Flags over a [slurm] table: the TOML gives the account, options and setup, the flags the rest."""
    config = tmp_path / "slurm.toml"
    config.write_text('[slurm]\naccount = "proj42"\npartition = "cpu"\ntime_minutes = 30\n'
                      'setup = ["module load python/3.11"]\n[slurm.options]\nqos = "high"\ngres = "gpu:1"\n')
    args = build_parser().parse_args([
        "compare", "--method", "tathe4", "--executor", "slurm", "--slurm-config", str(config), "--slurm-partition",
        "gpu", "--slurm-time", "120", "--slurm-cpus-per-task", "4", "--slurm-gpus-per-task", "1", "--slurm-option",
        "exclusive", "--max-retries", "2"])
    return _executor_choice(args)


def _request(tmp_path, **kw) -> CompareRequest:
    base = dict(methods=("tathe4",), seeds=1, epochs=1, recipe="short", synthetic=True, subset=32, threads=1,
                parallel=2, out=str(tmp_path / "cmp"))
    return validate(CompareRequest(**{**base, **kw}))


def test_the_sbatch_script_for_slurm_carries_every_setting_and_the_train_command(tmp_path, monkeypatch):
    import submitit

    _fake_slurm(tmp_path, monkeypatch)
    choice = _slurm_choice(tmp_path)
    assert choice.max_retries == 2 and choice.slurm.partition == "gpu"  # the flag over the TOML's "cpu"
    req = _request(tmp_path, executor=choice)
    study = Path(req.out).resolve()
    executor = SubmititExecutor(choice, study, cpus_per_task=1, device="cpu")
    specs = [JobSpec(run.name, tuple(train_command(req, run, 1, study / "runs" / run.name)), 1, study / "runs" / run.name)
             for run in all_runs(req)]
    tickets = executor.submit(specs)
    assert [t.job_id for t in tickets] == ["4242_0", "4242_1"]  # one array, a task per run
    assert tickets[0].log == study / "jobs" / "4242_0_0_log.out" and tickets[0].stderr == study / "jobs" / "4242_0_0_log.err"

    script = (study / "jobs" / "4242_submission.sh").read_text()
    flags = [line for line in script.splitlines() if line.startswith("#SBATCH")]
    for flag in ("--partition=gpu", "--time=120", "--cpus-per-task=4", "--gpus-per-task=1", "--account=proj42",
                 "--qos=high", "--gres=gpu:1", "--exclusive", "--array=0-1%2", "--nodes=1", "--ntasks-per-node=1",
                 "--job-name=q4bench", "--signal=USR2@90", "--open-mode=append",
                 f"--output={study}/jobs/%A_%a_0_log.out", f"--error={study}/jobs/%A_%a_0_log.err"):
        assert f"#SBATCH {flag}" in flags, (flag, script)
    assert "module load python/3.11" in script.split("# setup")[1].split("# command")[0]
    srun = shlex.split([line for line in script.splitlines() if line.startswith("srun ")][0])
    python_at = srun.index("env")
    assert srun[python_at + 1] == f"PYTHONPATH={REPO}" + (f"{os.pathsep}{os.environ['PYTHONPATH']}"
                                                          if os.environ.get("PYTHONPATH") else "")
    assert srun[python_at + 2:] == [sys.executable, "-u", "-m", "submitit.core._submit", str(study / "jobs")], script

    # What each array task runs: the run's own `train ... --resume`, exactly the local executor's command.
    for index, spec in enumerate(specs):
        job = submitit.core.utils.DelayedSubmission.load(study / "jobs" / f"4242_{index}_submitted.pkl").function
        assert isinstance(job, TrainJob) and job.command == spec.command and job.threads == 1
        assert job.command[:4] == (sys.executable, "-m", "suite", "train") and "--resume" in job.command
        assert job.command[job.command.index("--out") + 1] == str(spec.run_dir) and spec.run_dir.is_absolute()
        assert job.command[job.command.index("--method") + 1] == spec.name.split("-seed")[0]
        assert job.train_log == str(spec.run_dir / "train.log")


def test_slurm_states_from_sacct_and_outcomes(tmp_path, monkeypatch):
    import submitit

    _fake_slurm(tmp_path, monkeypatch)
    choice = _slurm_choice(tmp_path)
    study = (tmp_path / "cmp").resolve()
    executor = SubmititExecutor(choice, study, cpus_per_task=1, device="cpu")
    ticket = executor.attach(Ticket("4242_0", study / "jobs" / "4242_0_0_log.out",
                                    study / "jobs" / "outcomes" / "x.json", study / "jobs" / "4242_0_0_log.err"))

    def state(sacct_state: str) -> JobState:
        (tmp_path / "SACCT.txt").write_text(f"JobID|State|NodeList\n4242_0|{sacct_state}|node7\n")
        submitit.SlurmJob.watcher.clear()  # sacct answers are cached for minutes; ask again
        return executor.state(ticket)

    assert state("PENDING").phase == QUEUED and state("RUNNING").phase == RUNNING
    assert state("REQUEUED").phase == QUEUED
    # Ran, but not even its log reached the study folder: the node cannot see it.
    unseen = state("FAILED")
    assert unseen.phase == UNSEEN and f"cannot see the study folder {study}" in unseen.detail
    ticket.log.parent.mkdir(parents=True)
    ticket.stderr.write_text("srun: error: node7: task 0: Killed\n")
    ticket.log.write_text("")
    lost = state("NODE_FAIL")
    assert lost.phase == LOST and "ended (NODE_FAIL) without finishing: srun: error: node7: task 0: Killed" in lost.detail
    assert lost.log == ticket.stderr
    assert state("CANCELLED by 1001").phase == LOST  # cancelled or preempted: submitted again
    # An outcome decides, whatever sacct says.
    ticket.outcome.parent.mkdir(parents=True)
    ticket.outcome.write_text(json.dumps({"returncode": 2, "host": "node7", "wall_seconds": 3.0,
                                          "last_line": "q4bench: error: --data-dir /d: no CIFAR-10 there"}))
    failed = state("RUNNING")
    assert failed.phase == FAILED and failed.wall_seconds == 3.0
    assert failed.detail == "slurm job 4242_0 on node7 exited 2: q4bench: error: --data-dir /d: no CIFAR-10 there"
    ticket.outcome.write_text(json.dumps({"returncode": -9, "host": "node7", "wall_seconds": 3.0}))
    assert state("COMPLETED").detail == "slurm job 4242_0 on node7: the training was killed by SIGKILL"
    executor.kill(ticket)
    assert (tmp_path / "scancel.txt").read_text() == "4242_0\n"


# ---------------------------------------------------------------------------------------------
# The study loop, with an executor that plays a script instead of training


class Scripted(Executor):
    """Each run's jobs go through the phases given for it (the last one repeats); DONE writes a finished run."""

    slots, detached, poll_seconds = None, True, 0.0

    def __init__(self, phases: dict[str, list[str]], name: str = "submitit-local", epochs: int = 1):
        self.name, self.phases, self.epochs = name, phases, epochs
        self.submitted: list[str] = []
        self.attached: list[str] = []
        self.killed: list[str] = []
        self._seen: dict[str, int] = {}
        self._specs: dict[str, JobSpec] = {}

    def submit(self, jobs):
        tickets = []
        for job in jobs:
            job_id = f"{job.name}#{self.submitted.count(job.name) + 1}"
            self.submitted.append(job.name)
            self._specs[job_id] = job
            tickets.append(Ticket(job_id, job.run_dir.parent.parent / "jobs" / f"{job_id}.out"))
        return tickets

    def attach(self, ticket):
        self.attached.append(ticket.job_id)
        return ticket

    def state(self, ticket):
        name = ticket.job_id.split("#")[0]
        step = self._seen[ticket.job_id] = self._seen.get(ticket.job_id, -1) + 1
        phase = self.phases[name][min(step, len(self.phases[name]) - 1)]
        if phase == DONE:
            _finished_run(Path(self.study) / "runs" / name, self.epochs)
        return JobState(phase, f"{self.name} job {ticket.job_id} on n1: {phase}")

    def kill(self, ticket):
        self.killed.append(ticket.job_id)


def _history(run_name: str, epochs: int) -> str:
    """The fields of a run history that compare reads (suite/state_schema.json's "history")."""
    method, _, seed = run_name.rpartition("-seed")
    return json.dumps({"method": method, "seed": int(seed), "final_test_acc": 50.0,
                       "epochs": [{"epoch": i + 1, "test_acc": 50.0} for i in range(epochs)]})


def _finished_run(run_dir: Path, epochs: int) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "history.json").write_text(_history(run_dir.name, epochs))
    (run_dir / "predictions.npy").write_bytes(b"")


def _execute(tmp_path, executor: Scripted, max_retries: int = 3, log=None):
    req = _request(tmp_path, executor=ExecutorChoice("submitit-local", max_retries=max_retries))
    executor.study = Path(req.out).resolve()
    lines = [] if log is None else log
    execute(req, all_runs(req), 1, Path(req.out) / "runs", lines.append, executor)
    return lines


def test_a_permanent_failure_stops_the_study_with_its_line_and_log_and_cancels_the_rest(tmp_path):
    executor = Scripted({"fp32-seed0": [RUNNING, FAILED], "tathe4-seed0": [RUNNING]})
    with pytest.raises(UserError) as caught:
        _execute(tmp_path, executor)
    message = str(caught.value)
    train_log = (tmp_path / "cmp" / "runs" / "fp32-seed0" / "train.log").resolve()
    assert message == f"run fp32-seed0 submitit-local job fp32-seed0#1 on n1: failed (log {train_log})"
    assert executor.killed == ["tathe4-seed0#1"] and executor.submitted == ["fp32-seed0", "tathe4-seed0"]
    record = json.loads((tmp_path / "cmp" / "jobs.json").read_text())
    assert record["executor"] == "submitit-local"
    assert record["runs"]["fp32-seed0"]["state"] == FAILED and record["runs"]["tathe4-seed0"]["state"] == RUNNING


def test_a_lost_job_is_submitted_again_up_to_the_limit(tmp_path):
    executor = Scripted({"fp32-seed0": [LOST], "tathe4-seed0": [DONE]})
    lines = []
    with pytest.raises(UserError, match=r"run fp32-seed0 .*: lost; lost 3 times in a row without finishing an epoch "
                                        r"\(--max-retries 2\)"):
        _execute(tmp_path, executor, max_retries=2, log=lines)
    assert executor.submitted.count("fp32-seed0") == 3 and executor.submitted.count("tathe4-seed0") == 1
    assert sum("fp32-seed0: submitit-local job" in line and "submitting it again (retry" in line for line in lines) == 2
    record = json.loads((tmp_path / "cmp" / "jobs.json").read_text())["runs"]["fp32-seed0"]
    assert [a["state"] for a in record["attempts"]] == [LOST, LOST, LOST]


def test_a_lost_job_that_keeps_finishing_epochs_is_not_counted_against_the_limit(tmp_path):
    """A job that times out after each epoch (a long run under a short --slurm-time) is not a lost cause."""
    study = tmp_path / "cmp"

    class Progressing(Scripted):
        def state(self, ticket):
            name, attempt = ticket.job_id.split("#")
            if name == "tathe4-seed0":
                return super().state(ticket)
            epochs = int(attempt)
            run_dir = study.resolve() / "runs" / name
            run_dir.mkdir(parents=True, exist_ok=True)
            (run_dir / "history.json").write_text(_history(name, epochs))
            (run_dir / "predictions.npy").write_bytes(b"")
            return JobState(DONE if epochs == 3 else LOST, f"job {ticket.job_id}: timed out")

    executor = Progressing({"tathe4-seed0": [DONE]}, epochs=3)
    req = _request(tmp_path, epochs=3, executor=ExecutorChoice("submitit-local", max_retries=1))
    executor.study = study.resolve()
    lines = []
    execute(req, all_runs(req), 3, study / "runs", lines.append, executor)
    assert executor.submitted.count("fp32-seed0") == 3  # two losses, each after a new epoch: within max-retries 1
    assert sum("(it had finished an epoch)" in line for line in lines) == 2


def test_a_rerun_reattaches_to_recorded_jobs_instead_of_submitting_them_again(tmp_path):
    first = Scripted({"fp32-seed0": [RUNNING], "tathe4-seed0": [QUEUED]})

    def interrupt_on_second_poll(ticket, state=first.state, polls=[]):
        polls.append(ticket)
        if len(polls) > 2:
            raise KeyboardInterrupt
        return state(ticket)

    first.state = interrupt_on_second_poll
    lines = []
    with pytest.raises(KeyboardInterrupt):
        _execute(tmp_path, first, log=lines)
    assert first.killed == [] and "compare: 2 submitit-local job(s) keep running; rerun the same command" in lines[-1]

    # Another executor may not train runs whose jobs still run.
    with pytest.raises(UserError, match=r"jobs.json: 2 run\(s\) have submitit-local jobs recorded as queued or running "
                                        r"\(fp32-seed0#1, tathe4-seed0#1\); rerun with --executor submitit-local"):
        req = _request(tmp_path)
        execute(req, all_runs(req), 1, Path(req.out) / "runs", lambda line: None, LocalPool(2))

    # tathe4-seed0 finished while no compare watched it: its job is still followed, so its record ends as it did.
    _finished_run((tmp_path / "cmp" / "runs" / "tathe4-seed0").resolve(), 1)
    second = Scripted({"fp32-seed0": [RUNNING, DONE], "tathe4-seed0": [DONE]})
    lines = []
    _execute(tmp_path, second, log=lines)
    assert second.submitted == [] and sorted(second.attached) == ["fp32-seed0#1", "tathe4-seed0#1"]
    assert "compare: re-attached to fp32-seed0 (submitit-local job fp32-seed0#1, running when last seen)" in lines
    assert "compare: re-attached to tathe4-seed0 (submitit-local job tathe4-seed0#1, queued when last seen)" in lines
    record = json.loads((tmp_path / "cmp" / "jobs.json").read_text())["runs"]
    assert [a["job_id"] for a in record["fp32-seed0"]["attempts"]] == ["fp32-seed0#1"]  # never submitted twice
    assert record["fp32-seed0"]["state"] == DONE and record["tathe4-seed0"]["state"] == DONE


def test_a_job_that_cannot_see_the_study_folder_stops_it(tmp_path):
    executor = Scripted({"fp32-seed0": [UNSEEN], "tathe4-seed0": [RUNNING]})
    executor.state = lambda ticket: (JobState(UNSEEN, f"slurm job {ticket.job_id} ended (FAILED) without writing its "
                                              "log: the job cannot see the study folder; put it on storage every node "
                                              "shares") if ticket.job_id.startswith("fp32") else JobState(RUNNING))
    with pytest.raises(UserError, match=r"^run fp32-seed0 slurm job fp32-seed0#1 ended \(FAILED\) .*cannot see the "
                                        r"study folder; put it on storage every node shares \(log "):
        _execute(tmp_path, executor)
    assert executor.killed == ["tathe4-seed0#1"]


def test_never_compares_a_run_short_of_its_budget(tmp_path):
    req = _request(tmp_path, epochs=2)
    run_dir = Path(req.out) / "runs" / "fp32-seed0"
    _finished_run(run_dir, 1)
    history = {"method": "fp32", "seed": 0, "arch": req.arch, "recipe": "short", "planned_epochs": 2,
               "precision": "fp32", "epochs": [{}], "final_test_acc": 50.0}
    with pytest.raises(UserError, match=r"fp32-seed0/history.json: 1 of 2 epoch\(s\) trained; rerun the same compare"):
        comparemod._check_run_matches(run_dir, history, Run("fp32", 0), req, 2)


# ---------------------------------------------------------------------------------------------
# End to end through submitit-local (real jobs, real training)

# The paper code's small network: the executors do not care which network trains, and it costs ~11x less.
STUDY = ["--method", "tathe4", "--arch", "simpleresnet4bit", "--seeds", "2", "--epochs", "1", "--synthetic", "--subset", "512"]
# Fields that say when and how long, not what was measured.
TIME_FIELDS = ("provenance",)
RUN_TIME_FIELDS = ("wall_seconds",)


def _compare(args: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "suite", "compare", *args], capture_output=True, text=True, **kw)


@pytest.mark.slow
def test_submitit_local_writes_the_same_compare_json_as_local(tmp_path):
    local = _compare([*STUDY, "--out", str(tmp_path / "local")], timeout=1800)
    assert local.returncode == 0, local.stderr
    cluster = _compare([*STUDY, "--executor", "submitit-local", "--out", str(tmp_path / "sub")], timeout=1800)
    assert cluster.returncode == 0, cluster.stderr
    assert len(re.findall(r"compare: starting \S+ \(submitit-local job \d+\)", cluster.stdout)) == 4

    a, b = (json.loads((tmp_path / d / "compare.json").read_text()) for d in ("local", "sub"))
    assert b["provenance"]["executor"] == "submitit-local" and "executor" not in a["provenance"]
    assert {k: v for k, v in a.items() if k not in TIME_FIELDS + ("runs",)} == \
           {k: v for k, v in b.items() if k not in TIME_FIELDS + ("runs",)}  # verdicts, gaps, CIs, pairs: all equal
    strip = lambda runs: [{k: v for k, v in r.items() if k not in RUN_TIME_FIELDS} for r in runs]
    assert strip(a["runs"]) == strip(b["runs"])  # accuracies bit for bit (JSON floats compared exactly)
    assert all(r["wall_seconds"] > 0 for r in b["runs"])
    jobs = json.loads((tmp_path / "sub" / "jobs.json").read_text())
    assert jobs["executor"] == "submitit-local" and sorted(jobs["runs"]) == sorted(f"{r['method']}-seed{r['seed']}"
                                                                                  for r in b["runs"])
    for record in jobs["runs"].values():
        assert record["state"] == DONE and len(record["attempts"]) == 1
        assert (tmp_path / "sub" / record["log"]).is_file() and (tmp_path / "sub" / record["train_log"]).is_file()


def _train_processes(out: Path) -> list[psutil.Process]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmd = proc.info["cmdline"] or []
        if "train" in cmd and any(str(out) in part for part in cmd):
            found.append(proc)
    return found


def _wait_for(predicate, what: str, seconds: float = 600):
    deadline = time.monotonic() + seconds
    while True:
        value = predicate()
        if value:
            return value
        assert time.monotonic() < deadline, f"waited {seconds:.0f} s for {what}"
        time.sleep(0.5)


def _stopped(out: Path, count: int):
    procs = [p for p in _train_processes(out) if p.status() == psutil.STATUS_STOPPED]
    return procs if len(procs) >= count else None


@pytest.mark.slow
def test_a_rerun_reattaches_and_a_killed_job_resumes_after_its_last_epoch(tmp_path):
    """Two runs of 2 epochs; every training stops itself (SIGSTOP) just before saving epoch 2's checkpoint. The
    compare is killed -9 while its jobs are stopped; the rerun re-attaches to both jobs (no new submission);
    one training is then killed -9: its job is lost, submitted again, and the new job resumes after epoch 1."""
    out = (tmp_path / "cmp").resolve()
    args = ["--method", "tathe4", "--seeds", "1", "--epochs", "2", "--synthetic", "--subset", "32",
            "--threads", "1", "--executor", "submitit-local", "--out", str(out)]
    env = {**os.environ, "Q4BENCH_TEST_KILL_AT": "checkpoint.pt#2:STOP"}
    first = subprocess.Popen([sys.executable, "-m", "suite", "compare", *args], env=env,
                             stdout=open(tmp_path / "first.log", "wb"), stderr=subprocess.STDOUT)
    try:
        stopped = _wait_for(lambda: _stopped(out, 2), "two trainings stopped at epoch 2")
    finally:
        first.kill()
        first.wait()
    record = json.loads((out / "jobs.json").read_text())["runs"]
    first_ids = {name: rec["job_id"] for name, rec in record.items()}
    assert len(first_ids) == 2
    epoch_one = {name: json.loads((out / "runs" / name / "history.json").read_text())["epochs"][0]
                 for name in first_ids}

    # The rerun (without the stop) finds both jobs alive and follows them.
    rerun = subprocess.Popen([sys.executable, "-m", "suite", "compare", *args], stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        while len([line for line in lines if "re-attached to" in line]) < 2:
            line = rerun.stdout.readline()
            assert line, "".join(lines)
            lines.append(line)
        victim, survivor = stopped
        victim_run = next(part for part in victim.cmdline() if part.startswith(str(out / "runs"))).rsplit("/", 1)[1]
        victim.kill()  # kill -9 of the job's training
        survivor.send_signal(signal.SIGCONT)
        rest, _ = rerun.communicate(timeout=900)
    finally:
        if rerun.poll() is None:
            rerun.kill()
    output = "".join(lines) + rest
    assert rerun.returncode == 0, output
    assert "starting" not in output  # nothing submitted afresh
    assert f"compare: {victim_run}: submitit-local job {first_ids[victim_run]} on " in output
    assert "the training was killed by SIGKILL; submitting it again" in output
    assert re.search(rf"compare: resuming {victim_run} after epoch 1 \(submitit-local job \d+\)", output), output

    record = json.loads((out / "jobs.json").read_text())["runs"]
    survivor_run = next(name for name in first_ids if name != victim_run)
    assert [a["job_id"] for a in record[survivor_run]["attempts"]] == [first_ids[survivor_run]]
    assert [a["state"] for a in record[victim_run]["attempts"]] == [LOST, DONE]
    assert len(list((out / "jobs").glob("*_submitted.pkl"))) == 3  # two jobs, one resubmission: no duplicate
    for name in first_ids:
        history = json.loads((out / "runs" / name / "history.json").read_text())
        assert len(history["epochs"]) == 2 and history["epochs"][0] == epoch_one[name]  # epoch 1 kept, not retrained
    resumed = json.loads((out / "runs" / victim_run / "history.json").read_text())
    assert [r["after_epoch"] for r in resumed["resumed_from"]] == [1]
    assert f"resuming {out / 'runs' / victim_run} after epoch 1" in (out / "runs" / victim_run / "train.log").read_text()
    doc = json.loads((out / "compare.json").read_text())
    assert doc["budget"]["epochs"] == 2 and len(doc["runs"]) == 2
