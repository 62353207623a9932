"""Host ids and provenance stamps: what names a machine and the code behind a file."""

from __future__ import annotations

from suite import measure, provenance

FINGERPRINT = {"cpu_model": "AMD EPYC", "machine": "x86_64", "logical_cpus": 2, "memory_bytes": 24 * 2**30}


def test_machines_cloned_from_one_image_get_different_ids(monkeypatch):
    monkeypatch.setattr(measure, "_machine_id", lambda: "0" * 32)  # one image, cloned
    epyc = measure.host_id(FINGERPRINT)
    xeon = measure.host_id({**FINGERPRINT, "cpu_model": "Intel(R) Xeon(R) CPU @ 2.20GHz"})
    bigger = measure.host_id({**FINGERPRINT, "memory_bytes": 48 * 2**30})
    assert epyc.rsplit("-", 1)[1] != xeon.rsplit("-", 1)[1] != bigger.rsplit("-", 1)[1]
    assert epyc.rsplit("-", 1)[1] != bigger.rsplit("-", 1)[1]
    # Other ISA flags (another CPU generation behind the same model string) change the hash as well.
    monkeypatch.setattr(measure, "_cpu_identity", lambda: "flags=avx2 fma")
    a = measure.host_id(FINGERPRINT)
    monkeypatch.setattr(measure, "_cpu_identity", lambda: "flags=avx2 avx512f fma")
    assert measure.host_id(FINGERPRINT) != a


def test_host_id_is_stable_for_one_machine_and_hides_the_machine_id(monkeypatch):
    monkeypatch.setattr(measure, "_machine_id", lambda: "secret-machine-id")
    first = measure.host_id(FINGERPRINT)
    assert measure.host_id(dict(FINGERPRINT)) == first
    assert first.startswith("amd-epyc-2t-24g-") and "secret" not in first
    # Memory read a few MiB apart (kernel reservations) is the same machine.
    assert measure.host_id({**FINGERPRINT, "memory_bytes": 24 * 2**30 - 3 * 2**20}) == first
    monkeypatch.setattr(measure, "_machine_id", lambda: "another-instance")
    assert measure.host_id(FINGERPRINT) != first


def test_this_hosts_fingerprint_is_repeatable():
    assert measure.host_fingerprint()["host_id"] == measure.host_fingerprint()["host_id"]


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
