"""Host ids and provenance stamps: what names a machine and the code behind a file."""

from __future__ import annotations

from suite import provenance
from suite.measure import host

FINGERPRINT = {"cpu_model": "AMD EPYC", "machine": "x86_64", "logical_cpus": 2, "memory_bytes": 24 * 2**30}


def test_machines_cloned_from_one_image_get_different_ids(monkeypatch):
    monkeypatch.setattr(host, "_machine_id", lambda: "0" * 32)  # one image, cloned
    epyc = host.host_id(FINGERPRINT)
    xeon = host.host_id({**FINGERPRINT, "cpu_model": "Intel(R) Xeon(R) CPU @ 2.20GHz"})
    bigger = host.host_id({**FINGERPRINT, "memory_bytes": 48 * 2**30})
    assert epyc.rsplit("-", 1)[1] != xeon.rsplit("-", 1)[1] != bigger.rsplit("-", 1)[1]
    assert epyc.rsplit("-", 1)[1] != bigger.rsplit("-", 1)[1]
    # Other ISA flags (another CPU generation behind the same model string) change the hash as well.
    monkeypatch.setattr(host, "_cpu_identity", lambda: "flags=avx2 fma")
    a = host.host_id(FINGERPRINT)
    monkeypatch.setattr(host, "_cpu_identity", lambda: "flags=avx2 avx512f fma")
    assert host.host_id(FINGERPRINT) != a


def test_host_id_is_stable_for_one_machine_and_hides_the_machine_id(monkeypatch):
    monkeypatch.setattr(host, "_machine_id", lambda: "secret-machine-id")
    first = host.host_id(FINGERPRINT)
    assert host.host_id(dict(FINGERPRINT)) == first
    assert first.startswith("amd-epyc-2t-24g-") and "secret" not in first
    # Memory read a few MiB apart (kernel reservations) is the same machine.
    assert host.host_id({**FINGERPRINT, "memory_bytes": 24 * 2**30 - 3 * 2**20}) == first
    monkeypatch.setattr(host, "_machine_id", lambda: "another-instance")
    assert host.host_id(FINGERPRINT) != first


def test_this_hosts_fingerprint_is_repeatable():
    assert host.host_fingerprint()["host_id"] == host.host_fingerprint()["host_id"]


def test_stamp_names_commit_versions_and_time(monkeypatch, tmp_path):
    s = provenance.stamp()
    assert set(s) >= {"code", "versions", "written_at"}
    assert set(s["versions"]) == {"suite", "python", "torch", "onnxruntime"}
    assert s["code"]["commit"]
    # Outside a checkout: "unknown", unless the launcher names the commit.
    provenance.code_version.cache_clear()
    monkeypatch.setattr(provenance, "_REPO", tmp_path)
    monkeypatch.delenv(provenance.COMMIT_ENV, raising=False)
    assert provenance.code_version() == {"commit": "unknown", "dirty": None, "source": "not a git checkout"}
    provenance.code_version.cache_clear()
    monkeypatch.setenv(provenance.COMMIT_ENV, "abc123")
    assert provenance.code_version()["commit"] == "abc123"
    provenance.code_version.cache_clear()


X86_CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
stepping\t: 1
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16
vmx flags\t: vnmi
bugs\t\t: sysret_ss_attrs

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 7B13
flags\t\t: fpu sse2 avx2
"""

ARM_CPUINFO = """processor\t: 0
BogoMIPS\t: 50.00
Features\t: fp asimd evtstrm aes sve asimddp
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x1
CPU part\t: 0xd40
CPU revision\t: 1

processor\t: 1
Features\t: fp asimd

Model\t\t: Neoverse-V1 board
"""


def test_cpuinfo_reads_x86_flags_and_the_first_cpus_identity(tmp_path):
    info = host.parse_cpuinfo(X86_CPUINFO)
    assert info.model == "AMD EPYC 7B13"
    assert info.flags == {"fpu", "sse2", "avx2", "avx512f", "avx512_bf16"}  # the first CPU's, not "vmx flags"
    assert dict(info.identity) == {"vendor_id": "AuthenticAMD", "cpu family": "25", "model": "1", "stepping": "1",
                                   "flags": "avx2 avx512_bf16 avx512f fpu sse2"}
    (tmp_path / "cpuinfo").write_text(X86_CPUINFO)
    assert host.cpu_flags(tmp_path / "cpuinfo") == info.flags
    assert host._cpu_identity(str(tmp_path / "cpuinfo")).startswith("vendor_id=AuthenticAMD;cpu family=25;")


def test_cpuinfo_reads_arm_features_and_a_board_model_after_the_blocks(tmp_path):
    info = host.parse_cpuinfo(ARM_CPUINFO)
    assert info.flags == {"fp", "asimd", "evtstrm", "aes", "sve", "asimddp"}
    assert info.model == "Neoverse-V1 board"
    assert dict(info.identity) == {"CPU implementer": "0x41", "CPU part": "0xd40", "CPU variant": "0x1",
                                   "CPU revision": "1", "Features": "aes asimd asimddp evtstrm fp sve"}
    # The one reader feeds the fingerprint's ISA names: arm's "Features" gives NEON, dot product and SVE.
    isa = {name: any(f in info.flags for f in names) for name, names in host.ISA_FLAGS.items()}
    assert isa["neon"] and isa["arm_dotprod"] and isa["sve"] and not isa["avx2"]
    assert host.read_cpuinfo(tmp_path / "absent") is None and host.cpu_flags(tmp_path / "absent") == frozenset()
