"""Hardware profiles: shipped files, validation errors naming file and key, threads, caps, the cgroup
stand-in (a temporary directory: nothing is ever written under /sys/fs/cgroup)."""

import subprocess
import sys
from pathlib import Path

import pytest

from suite.errors import UserError
from suite.profiles import (
    MIN_MEMORY_CAP_MIB,
    CgroupSlot,
    available_profiles,
    cgroup_root_usable,
    find_delegated_cgroup,
    parse_profile,
    resolve_profile,
)

GOOD = 'description = "a test machine"\nthreads = 2\nmemory_cap_mib = 4096\nbatch_size = 64\n'


def test_shipped_profiles_load():
    names = available_profiles()
    for required in ("single-thread", "colab-free-cpu", "laptop-4c", "all-cores"):
        assert required in names
    for name in names:
        resolve_profile(name, host_cpus=2)
    colab = resolve_profile("colab-free-cpu")
    assert (colab.threads, colab.memory_cap_mib, colab.batch_size) == (2, 12288, 128)
    laptop = resolve_profile("laptop-4c")
    assert (laptop.threads, laptop.memory_cap_mib) == (4, 8192)
    assert resolve_profile("single-thread").memory_cap_mib is None


def test_all_cores_resolves_to_the_host():
    profile = resolve_profile("all-cores", host_cpus=7)
    assert profile.threads == 7 and profile.threads_spec == "all"
    assert not profile.oversubscribed(host_cpus=7)


def test_more_threads_than_the_host_is_flagged_not_refused():
    profile = parse_profile(Path("big.toml"), 'description = "x"\nthreads = 64\n')
    assert profile.oversubscribed(host_cpus=2)
    assert not parse_profile(Path("p.toml"), GOOD).oversubscribed(host_cpus=2)


def test_good_profile_fields():
    profile = parse_profile(Path("/x/p.toml"), GOOD + "watts_per_busy_thread = 5\n")
    assert profile.name == "p"
    assert (profile.threads, profile.memory_cap_mib, profile.batch_size, profile.watts_per_busy_thread) == (2, 4096, 64, 5.0)


@pytest.mark.parametrize(
    "text, key",
    [
        (GOOD + "turbo = true\n", "turbo"),
        ('description = "x"\nthreads = "two"\n', "threads"),
        ('description = "x"\nthreads = 0\n', "threads"),
        ('description = "x"\nthreads = -3\n', "threads"),
        ('description = "x"\nthreads = true\n', "threads"),
        ('description = "x"\nthreads = 2.5\n', "threads"),
        ('description = "x"\nthreads = 2\nmemory_cap_mib = 100\n', "memory_cap_mib"),
        ('description = "x"\nthreads = 2\nmemory_cap_mib = "12G"\n', "memory_cap_mib"),
        ('description = "x"\nthreads = 2\nbatch_size = 1\n', "batch_size"),
        ('description = "x"\nthreads = 2\nwatts_per_busy_thread = -1\n', "watts_per_busy_thread"),
        ('threads = 2\n', "description"),
        ('description = "x"\n', "threads"),
        ('description = 5\nthreads = 2\n', "description"),
        ('description = "x"\nthreads = 2\ndevice = "tpu"\n', "device"),
        ('description = "x"\nthreads = 2\nprecision = "fp16"\n', "precision"),
        ('description = "x"\nthreads = 2\nprecision = 16\n', "precision"),
    ],
)
def test_bad_profiles_name_file_and_key(tmp_path, text, key):
    path = tmp_path / "broken.toml"
    path.write_text(text)
    with pytest.raises(UserError) as info:
        resolve_profile(str(path))
    message = str(info.value)
    assert str(path) in message and repr(key) in message and "\n" not in message


def test_cap_below_the_data_is_refused_with_the_reason(tmp_path):
    path = tmp_path / "tiny.toml"
    path.write_text(f'description = "x"\nthreads = 1\nmemory_cap_mib = {MIN_MEMORY_CAP_MIB - 1}\n')
    with pytest.raises(UserError, match="too small to load the data"):
        resolve_profile(str(path))
    path.write_text(f'description = "x"\nthreads = 1\nmemory_cap_mib = {MIN_MEMORY_CAP_MIB}\n')
    assert resolve_profile(str(path)).memory_cap_mib == MIN_MEMORY_CAP_MIB


def test_invalid_toml_and_unknown_names(tmp_path):
    path = tmp_path / "bad.toml"
    path.write_text("threads = = 2\n")
    with pytest.raises(UserError, match="not valid TOML"):
        resolve_profile(str(path))
    with pytest.raises(UserError, match="unknown profile 'nope'; known: .*colab-free-cpu"):
        resolve_profile("nope")


def test_rlimit_cap_is_applied_in_the_process_that_asks():
    code = ("import resource; from suite.profiles import apply_rlimit_cap; print(apply_rlimit_cap(300)); "
            "print(resource.getrlimit(resource.RLIMIT_DATA)[0])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0].startswith("RLIMIT_DATA = 300 MiB")
    assert int(out[1]) == 300 * 2**20


# ---------------------------------------------------------------------------------------------
# cgroup v2 against a stand-in directory


def fake_cgroup_root(tmp_path: Path, controllers: str = "cpu memory") -> Path:
    root = tmp_path / "delegated"
    root.mkdir(parents=True)
    (root / "cgroup.subtree_control").write_text(controllers + "\n")
    return root


def test_cgroup_root_usability(tmp_path):
    assert cgroup_root_usable(fake_cgroup_root(tmp_path)) is None
    assert "memory controller" in cgroup_root_usable(fake_cgroup_root(tmp_path / "b", "cpu"))
    assert "not readable" in cgroup_root_usable(tmp_path / "missing")


def test_cgroup_slot_sets_memory_max_reads_events_and_cleans_up(tmp_path):
    root = fake_cgroup_root(tmp_path)
    slot = CgroupSlot.create(root, "q4bench-1-x", 512)
    assert (slot.path / "memory.max").read_text() == str(512 * 2**20)
    assert not slot.oom_killed()
    (slot.path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert slot.oom_killed() and slot.events()["max"] == 3
    slot.remove()
    assert not slot.path.exists()


def test_find_delegated_cgroup_never_takes_the_hierarchy_root(tmp_path, monkeypatch):
    monkeypatch.delenv("Q4BENCH_CGROUP_ROOT", raising=False)
    mount = tmp_path / "cg"
    (mount / "user.slice" / "bench").mkdir(parents=True)
    (mount / "user.slice" / "bench" / "cgroup.subtree_control").write_text("memory pids\n")
    mounts = tmp_path / "mounts"
    mounts.write_text(f"cgroup2 {mount} cgroup2 rw,nosuid 0 0\n")
    membership = tmp_path / "cgroup"
    membership.write_text("0::/\n")
    assert find_delegated_cgroup(str(mounts), str(membership)) is None
    membership.write_text("0::/user.slice/bench\n")
    assert find_delegated_cgroup(str(mounts), str(membership)) == mount / "user.slice" / "bench"
    mounts.write_text(f"cgroup {mount} cgroup rw,memory 0 0\n")  # cgroup v1 only: no
    assert find_delegated_cgroup(str(mounts), str(membership)) is None
