"""suite/child.py, the one way the suite starts a child: its environment (thread variables, PYTHONPATH, no
torchrun variables), the task protocol (TASK.json in, RESULT.json out, atomically), how it ended (ok, failed
with its exit status, killed, timed out, no result), and the death signal (a child dies with its parent).
Every test starts real processes."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from suite import child
from suite.child import (FAILED, KILLED, NO_RESULT, OK, STDOUT_DROPPED, THREAD_VARIABLES, TIMED_OUT, Child, ChildSpec,
                         TaskFiles, child_environment, run, serve, task_spec, thread_environment)

REPO = Path(__file__).resolve().parent.parent
PY = sys.executable

# A task child in one line: echoes its task and the environment it was given.
NAMES = THREAD_VARIABLES + child.TORCHRUN_VARIABLES + ("PYTHONPATH",)
ECHO = ("import os, sys; from suite.child import serve; "
        "sys.exit(serve(sys.argv[1:], lambda task: {'task': task, 'env': {k: os.environ.get(k) for k in "
        + repr(NAMES) + "}}))")


def spec(tmp_path, code: str, **options) -> ChildSpec:
    return ChildSpec((PY, "-c", code), 1, tmp_path / "child.log", **options)


def test_thread_environment_covers_openmp_mkl_and_blas():
    env = thread_environment(3)
    assert set(env) == set(THREAD_VARIABLES) and set(env.values()) == {"3"}
    assert {"OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"} <= set(env)


def test_a_task_child_gets_its_threads_and_the_suite_and_no_torchrun_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("MASTER_PORT", "29500")
    monkeypatch.setenv("OMP_NUM_THREADS", "16")  # ours must not leak through
    monkeypatch.setenv("PYTHONPATH", "/elsewhere")
    task = {"job": "echo", "n": 3, "nested": {"list": [1, 2.5, None], "text": "é"}}
    end = run(task_spec((PY, "-c", ECHO), task, TaskFiles.named(tmp_path, "echo"), 4))
    assert end.status == OK and end.ok and end.returncode == 0, end.spec.log.read_text()
    assert end.result["task"] == task  # the round trip: JSON in, JSON out, nothing lost
    env = end.result["env"]
    assert all(env[name] == "4" for name in THREAD_VARIABLES)
    assert all(env[name] is None for name in child.TORCHRUN_VARIABLES)
    assert env["PYTHONPATH"].split(os.pathsep) == [str(REPO), "/elsewhere"]
    assert json.loads((tmp_path / "echo.task.json").read_text()) == task
    assert child_environment(2)["OMP_NUM_THREADS"] == "2" and "RANK" not in child_environment(2)


def test_serve_turns_an_exception_into_a_result_and_an_exit_status(tmp_path):
    code = ("import sys; from suite.child import serve\n"
            "def work(task): raise MemoryError('no room for ' + task['what'])\n"
            "sys.exit(serve(sys.argv[1:], work, lambda exc: ({'status': 'oom', 'detail': str(exc)}, 3)))")
    end = run(task_spec((PY, "-c", code), {"what": "tensors"}, TaskFiles.named(tmp_path, "oom"), 1))
    assert (end.status, end.returncode) == (FAILED, 3)
    assert end.result == {"status": "oom", "detail": "no room for tensors"}  # written although the child failed
    assert "MemoryError" in end.spec.log.read_text()  # the traceback goes to the log
    assert end.describe() == "exited with status 3"


def test_serve_writes_nothing_when_the_work_returns_none(tmp_path):
    task, result = tmp_path / "t.json", tmp_path / "r.json"
    task.write_text("{}")
    assert serve([str(task), str(result)], lambda t: None) == 0 and not result.exists()
    assert serve([str(task), str(result)], lambda t: {"ok": True}) == 0
    assert json.loads(result.read_text()) == {"ok": True}
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith(".tmp")] == []  # written atomically


def test_a_nonzero_exit_is_failed_with_its_status_and_its_log(tmp_path):
    end = run(spec(tmp_path, "import sys; print('bad input: --x 3'); sys.exit(2)"))
    assert (end.status, end.returncode, end.result) == (FAILED, 2, None)
    assert child.last_line(end.spec.log) == "bad input: --x 3"


def test_a_child_killed_by_a_signal_is_killed_and_names_it(tmp_path):
    end = run(spec(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    assert (end.status, end.returncode) == (KILLED, -signal.SIGKILL)
    assert end.describe() == "killed by SIGKILL"


def test_a_child_past_its_timeout_is_killed_and_timed_out(tmp_path):
    began = time.monotonic()
    end = run(spec(tmp_path, "import os, time; print(os.getpid(), flush=True); time.sleep(60)", timeout_s=1))
    assert (end.status, end.returncode) == (TIMED_OUT, None)
    assert end.describe() == "timed out after 1 s" and 1 <= end.seconds < 30 and time.monotonic() - began < 30
    pid = int(end.spec.log.read_text().split()[0])
    assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE


def test_a_task_child_that_exits_without_its_result_is_no_result(tmp_path):
    files = TaskFiles.named(tmp_path, "quiet")
    files.result.write_text('{"stale": "from an earlier child"}')  # must not pass for this child's result
    end = run(task_spec((PY, "-c", "pass"), {"job": "nothing"}, files, 1))
    assert (end.status, end.returncode, end.result) == (NO_RESULT, 0, None) and not end.ok
    assert end.describe() == f"exited 0 without writing its result {files.result}"


def test_a_result_that_is_not_json_is_no_result(tmp_path):
    files = TaskFiles.named(tmp_path, "torn")
    code = "import sys; open(sys.argv[2], 'w').write('{\"half\": ')"
    assert run(task_spec((PY, "-c", code), {}, files, 1)).status == NO_RESULT


def test_output_goes_to_the_log_unless_dropped(tmp_path):
    code = "import sys; print('out'); print('err', file=sys.stderr)"
    run(spec(tmp_path, code))
    assert (tmp_path / "child.log").read_text().split() == ["out", "err"]
    (tmp_path / "child.log").unlink()
    run(spec(tmp_path, code, stdout=STDOUT_DROPPED))
    assert (tmp_path / "child.log").read_text().split() == ["err"]


def test_poll_and_stop(tmp_path):
    started = Child(spec(tmp_path, "import time; time.sleep(60)"))
    assert started.poll() is None
    started.stop()
    end = started.poll()
    assert end.status == KILLED and end.returncode == -signal.SIGTERM


def test_a_bad_spec_says_how_to_fix_it(tmp_path):
    with pytest.raises(ValueError, match="STDOUT_TO_LOG"):
        spec(tmp_path, "pass", stdout="terminal")
    with pytest.raises(ValueError, match="threads must be at least 1"):
        ChildSpec((PY,), 0, tmp_path / "log")


# A parent that starts a sleeping child through the launcher, says both pids, then waits.
PARENT = (
    "import sys, time; from pathlib import Path; from suite.child import Child, ChildSpec\n"
    "c = Child(ChildSpec((sys.executable, '-c', 'import time; time.sleep(120)'), 1, Path(sys.argv[1])))\n"
    "print(c.pid, flush=True)\n"
    "time.sleep(120)\n"
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the death signal is Linux's prctl")
def test_a_child_dies_when_its_parent_is_killed(tmp_path):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    parent = subprocess.Popen([PY, "-c", PARENT, str(tmp_path / "child.log")], stdout=subprocess.PIPE, text=True,
                              env=env)
    try:
        pid = int(parent.stdout.readline())
        assert psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
        parent.kill()  # SIGKILL: the parent runs no cleanup of its own
        parent.wait()
        deadline = time.monotonic() + 20
        while psutil.pid_exists(pid) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not psutil.pid_exists(pid), "the child outlived its parent"
    finally:
        parent.kill()
        parent.wait()
