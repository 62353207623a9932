"""The bench harness: energy tags and RAPL wrap-around, child isolation (threads, caps), the oom path,
and one smoke run end to end. No timing assertions: speed targets belong to the bench itself."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from suite import bench, spec
from suite.measure import compute, energy, host, throughput
from suite.measure.compute import train_flops_per_image
from suite.model import build_arch, conv_layers
from suite.cli import main
from suite.errors import UserError
from suite.profiles import Profile
from suite.results import read_result

# ---------------------------------------------------------------------------------------------
# Energy


def fake_powercap(root: Path, packages: dict[str, tuple[int, int]]) -> Path:
    for index, (name, (energy_uj, max_range)) in enumerate(packages.items()):
        zone = root / f"intel-rapl:{index}"
        zone.mkdir(parents=True)
        (zone / "name").write_text(name)
        (zone / "energy_uj").write_text(str(energy_uj))
        (zone / "max_energy_range_uj").write_text(str(max_range))
        sub = root / f"intel-rapl:{index}:0"  # a core sub-domain: not added on top of its package
        sub.mkdir()
        (sub / "energy_uj").write_text("5")
        (sub / "max_energy_range_uj").write_text("100")
    return root


def test_rapl_reads_packages_and_corrects_wrap_around(tmp_path):
    root = fake_powercap(tmp_path / "powercap", {"package-0": (900, 1000), "package-1": (100, 1000)})
    rapl = energy.RaplReader(root)
    assert rapl.available and [d.name for d in rapl.domains] == ["package-0", "package-1"]
    before = rapl.read()
    (root / "intel-rapl:0" / "energy_uj").write_text("300")  # wrapped: 900 -> 1000 -> 300 is 400 uJ
    (root / "intel-rapl:1" / "energy_uj").write_text("600")  # 500 uJ
    assert rapl.joules_between(before, rapl.read()) == pytest.approx(900e-6)


def test_energy_method_tags(tmp_path):
    epoch = 50_000
    rapl = energy.RaplReader(fake_powercap(tmp_path / "pc", {"package-0": (0, 10**12)}))
    meter = energy.EnergyMeter(rapl)
    meter.start()
    (tmp_path / "pc" / "intel-rapl:0" / "energy_uj").write_text(str(2_000_000))  # 2 J over the window
    meter.stop(images=100)
    measured = energy.energy_result(meter, energy.power_model("AMD EPYC"), epoch)
    assert measured["method"] == "measured_rapl"
    assert measured["joules_per_epoch"] == pytest.approx(2.0 / 100 * epoch)

    no_rapl = energy.RaplReader(tmp_path / "absent")
    assert not no_rapl.available and "does not exist" in no_rapl.reason
    meter = energy.EnergyMeter(no_rapl, cpu_seconds=10.0, images=100)
    estimated = energy.energy_result(meter, energy.PowerModel(3.0, "test"), epoch)
    assert estimated["method"] == "estimated"
    assert estimated["joules_per_epoch"] == pytest.approx(10.0 * 3.0 / 100 * epoch)
    assert "3.00 W" in estimated["model"] and "RAPL unavailable" in estimated["model"]

    unavailable = energy.energy_result(meter, None, epoch)
    assert unavailable["method"] == "unavailable" and unavailable["joules_per_epoch"] is None


def test_power_model_priority():
    assert energy.power_model("AMD EPYC 7763 64-Core Processor", 9.0).source.startswith("the profile")
    table = energy.power_model("AMD EPYC 7763 64-Core Processor")
    assert table.watts_per_busy_thread == pytest.approx(280 / 128) and "TDP table" in table.source
    default = energy.power_model("Mystery CPU")
    assert default.watts_per_busy_thread == energy.DEFAULT_WATTS_PER_THREAD and "default" in default.source


def test_host_fingerprint_fields():
    found = host.host_fingerprint()
    for key in ("cpu_model", "physical_cores", "logical_cpus", "isa", "memory_bytes", "os", "python", "torch",
                "onnxruntime", "host_id"):
        assert key in found
    assert {"avx2", "avx512f", "avx512_vnni", "amx", "neon"} <= set(found["isa"])


def test_train_flops_count_the_three_gemms_less_the_first_input_gradient():
    from suite.model import VGG4bit, forward_macs_per_image

    model = VGG4bit()
    first = 3 * 64 * 9 * 32 * 32
    assert compute.train_flops_per_image(model) == 2 * (3 * forward_macs_per_image(model) - first)


def test_conv_kernel_rates_time_every_pass_of_the_network_s_convs():
    from suite.model import VGG4bit

    model = VGG4bit()
    rates = compute.conv_kernel_rates(model, batch_size=2, repeats=1)
    assert rates["layers"] == 6 and rates["batch_size"] == 2 and rates["memory_format"] == "channels_last"
    conv_flops = 2 * 2 * sum(
        m.in_channels * m.out_channels * 9 * size * size
        for m, size in zip([m for m in model.modules() if isinstance(m, torch.nn.Conv2d)], (32, 32, 16, 16, 8, 8))
    )
    first = 2 * 2 * 3 * 64 * 9 * 32 * 32
    # gflops x seconds gives back the FLOPs each pass really ran: the input gradient skips the first layer.
    for name, flops in (("forward", conv_flops), ("backward_weights", conv_flops), ("backward_data", conv_flops - first)):
        assert rates[name]["seconds"] > 0
        assert rates[name]["gflops"] * rates[name]["seconds"] * 1e9 == pytest.approx(flops)


def test_paired_ratios_use_the_same_round():
    seconds = {"fp32": [1.0, 2.0, 1.0, 2.0], "q": [1.1, 2.2, 1.1, 2.2]}
    assert throughput.ratio_estimates(seconds, "fp32")["q"]["median"] == pytest.approx(1.1)


def test_ratio_cycles_cancel_the_position_effect():
    # Whoever runs first in a round is 10% slower; q is truly 2% slower than fp32. Rounds alternate
    # the order (fp32 first in even rounds), as interleaved_training_windows does.
    first, second = 1.10, 1.00
    seconds = {"fp32": [first if r % 2 == 0 else second for r in range(6)],
               "q": [1.02 * (second if r % 2 == 0 else first) for r in range(6)]}
    per_round = [q / b for q, b in zip(seconds["q"], seconds["fp32"])]
    assert max(per_round) > 1.1 and min(per_round) < 0.95  # a per-round ratio swings with the order
    est = throughput.ratio_estimates(seconds, "fp32")["q"]
    assert est["median"] == pytest.approx(1.02) and est["cycles"] == 3
    assert est["low"] == pytest.approx(1.02) and est["high"] == pytest.approx(1.02)
    # Fewer rounds than one cycle: each round stands alone.
    assert throughput.ratio_estimates({"fp32": [1.0], "q": [1.5]}, "fp32")["q"]["cycles"] == 1


def test_windows_come_in_whole_cycles():
    assert bench.get_tier("quick").windows_for(2) == 8 and bench.get_tier("quick").windows_for(3) == 9
    assert bench.get_tier("smoke").windows_for(7) == 7


# ---------------------------------------------------------------------------------------------
# Children: caps and the oom path


def profile(name="p", threads=1, cap=None):
    return Profile(name, "test", threads, cap, 16, None, Path(f"{name}.toml"), str(threads))


KILLED_BY_KERNEL = (
    "import json, os, signal, sys\n"
    "task = json.load(open(sys.argv[1]))\n"
    "open(os.path.join(task['cgroup_dir'], 'memory.events'), 'w').write('oom 1\\noom_kill 1\\n')\n"
    "os.kill(os.getpid(), signal.SIGKILL)\n"
)


def test_a_child_the_cgroup_oom_killer_takes_becomes_oom(tmp_path):
    root = tmp_path / "cg"
    root.mkdir()
    (root / "cgroup.subtree_control").write_text("memory\n")
    cap = bench.CapPlan("cgroup", root, None)
    outcome = bench.run_child({"job": "throughput"}, profile(cap=256), cap, tmp_path, "killed", 60,
                              child_argv=(sys.executable, "-c", KILLED_BY_KERNEL))
    assert outcome.status == "oom" and "OOM killer" in outcome.detail and "cgroup" in outcome.detail
    assert [p.name for p in root.iterdir()] == ["cgroup.subtree_control"]  # the child's group is gone


def test_a_child_killed_without_a_cap_is_a_failure_not_oom(tmp_path):
    outcome = bench.run_child({"job": "throughput"}, profile(), bench.CapPlan("none", None, None), tmp_path, "k", 60,
                              child_argv=(sys.executable, "-c", "import os, signal; os.kill(os.getpid(), signal.SIGKILL)"))
    assert outcome.status == "failed" and "SIGKILL" in outcome.detail


def write_profile(folder: Path, name: str, text: str) -> None:
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.toml").write_text(text)


def test_tiny_cap_gives_an_oom_result_and_the_bench_goes_on(tmp_path):
    profiles = tmp_path / "profiles"
    write_profile(profiles, "tiny", 'description = "too little memory for torch"\nthreads = 1\nmemory_cap_mib = 180\n')
    out = tmp_path / "results"
    path = bench.run_bench(bench.BenchConfig(profiles=["tiny"], tier="smoke", out=str(out), profiles_dir=str(profiles)),
                           log=lambda line: None)
    result = read_result(path)
    entry = result["profiles"][0]
    assert entry["status"] == "oom" and entry["cap_enforcement"] == "rlimit"
    for m in entry["methods"].values():  # every child ran (and was capped), none brought the bench down
        assert m["status"] == "oom" and m["train_images_per_s"] is None and m["energy"]["method"] == "unavailable"
        assert "180 MiB" in m["status_detail"]


# ---------------------------------------------------------------------------------------------
# One smoke run end to end, and the CLI


def test_smoke_bench_end_to_end(tmp_path):
    """On the small network (--arch): the documented `make bench` test runs the paper's VGG through the same
    path; this one also shows the network reaches every child and the result."""
    out = tmp_path / "results"
    lines = []
    config = bench.BenchConfig(profiles=["single-thread"], tier="smoke", out=str(out), arch="simpleresnet4bit")
    path = bench.run_bench(config, log=lines.append)
    assert path.parent == out and lines[-1] == f"result: {path}"
    result = read_result(path)  # strict schema validation
    assert result["arch"] == "simpleresnet4bit" and "--arch simpleresnet4bit" in result["command"]
    assert any(line.startswith("  network: simpleresnet4bit;") for line in lines)
    assert result["tier"]["name"] == "smoke" and result["data"]["kind"] == "synthetic"
    assert result["accuracy"]["measured"] is False and result["accuracy"]["reason"]
    entry = result["profiles"][0]
    assert entry["status"] == "ok", entry["status_detail"]
    assert entry["torch_threads"] == 1 and entry["cap_enforcement"] == "none" and not entry["oversubscribed"]
    assert entry["sgemm_gflops"] > 0 and entry["step_time_ratio"]["fp32"] == 1.0
    # fp32 arms always; bf16 arms beside them where this CPU has bf16 instructions (profile precision "auto")
    from suite.measure.host import cpu_flags

    has_bf16 = bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})
    assert set(entry["methods"]) == ({"fp32", "tathe4", "fp32@bf16", "tathe4@bf16"} if has_bf16 else {"fp32", "tathe4"})
    assert entry["precisions"] == (["fp32", "bf16"] if has_bf16 else ["fp32"]) and entry["device"] == "cpu"
    for name, m in entry["methods"].items():
        assert m["method"] == name.split("@")[0] and m["precision"] == ("bf16" if "@" in name else "fp32")
        if m["precision"] == "bf16":
            assert m["precision_support"].startswith("native")
        assert name in entry["step_time_ratio"]
    # The ceiling: per precision of the arms, the best of the square product and the network's convolutions as
    # GEMMs; the fp32 one never below a square sample taken between rounds.
    ceiling = entry["ceiling"]
    assert set(p for p in ("fp32", "bf16") if ceiling.get(p)) == set(entry["precisions"])
    assert len(ceiling["fp32"]["shapes"]) > 10 and ceiling["max_rows"] == 1024
    assert ceiling["fp32"]["gflops"] >= max(max(s["gflops"] for s in ceiling["fp32"]["shapes"]),
                                            max(entry["sgemm"]["samples_gflops"]))
    assert "fp32_gflops" in ceiling["peak"]
    for m in entry["methods"].values():
        assert m["train_images_per_s"] > 0 and m["eval_images_per_s"] > 0 and m["peak_rss_bytes"] > 100 * 2**20
        best = ceiling[m["precision"]]["gflops"]
        assert m["efficiency_baseline"] == m["precision"]
        assert m["efficiency"] == pytest.approx(m["achieved_gflops"] / best)
        assert (m["efficiency_anomaly"] is None) == (m["efficiency"] <= 1)  # above 1 is flagged, never silent
        # The range: each round's window against the same ceiling.
        per_round = [entry["train_flops_per_image"] * rate / 1e9 / best for rate in m["train_window_images_per_s"]]
        assert len(per_round) == len(m["train_window_images_per_s"]) == 4
        assert m["efficiency_range"] == pytest.approx([min(per_round), max(per_round)])
        assert m["energy"]["method"] in ("measured_rapl", "estimated")
        assert m["accuracy"] is None and m["accuracy_note"]
    costs = result["method_costs"]
    assert set(costs) == {"fp32", "tathe4"} and not costs["tathe4"]["quantizes_gradients"]
    assert costs["tathe4"]["bitops_ratio"] == {"value": None, "method": "unavailable",
                                               "model": "not estimated: the method quantizes no gradient"}
    assert "fake-quantized" in costs["tathe4"]["kernels"] and costs["fp32"]["kernels"] == "float32"
    small = build_arch("simpleresnet4bit", 10)  # every figure is the small network's, none the VGG's
    assert entry["train_flops_per_image"] == train_flops_per_image(small)
    assert costs == bench.method_costs(["fp32", "tathe4"], "simpleresnet4bit")
    kernels = entry["conv_kernels"]
    assert kernels["batch_size"] == 16 and kernels["layers"] == len(conv_layers(small))
    assert all(kernels[name]["gflops"] > 0 for name in spec.CONV_PASSES)
    assert any(line.strip().startswith("conv kernels timed alone: forward") for line in bench.summary_lines(result))
    assert any(line.strip().startswith("ceiling, best of") for line in bench.summary_lines(result))
    assert bench.summary_lines(result)[0] == "network: simpleresnet4bit"
    assert any("result:" in line for line in lines)


def test_method_costs_estimate_bitops_only_for_gradient_quantizing_methods():
    costs = bench.method_costs(["luq4", "cpt", "tathe4-noclip"])
    for name in ("luq4", "cpt"):
        assert costs[name]["quantizes_gradients"] and costs[name]["kernels"].startswith("simulated")
        assert costs[name]["bitops_ratio"]["method"] == "estimated" and "CPT's cost model" in costs[name]["bitops_ratio"]["model"]
    # LUQ: 4-bit weights, activations and gradients on every layer: (16 + 16 + 16) / (3 * 1024) = 1/64.
    assert costs["luq4"]["bitops_ratio"]["value"] == pytest.approx(1 / 64)
    # CPT: cyclic 3..8-bit forward, 8-bit gradients, last linear FP32: between all-3-bit and all-8-bit.
    assert 3 * 3 / 1024 < costs["cpt"]["bitops_ratio"]["value"] < 0.1
    assert costs["tathe4-noclip"]["bitops_ratio"]["value"] is None


def test_bench_cli_errors_are_one_line(capsys, tmp_path):
    assert main(["bench", "--tier", "smoke", "--profile", "no-such-machine", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown profile 'no-such-machine'" in err and "\n" not in err
    assert main(["bench", "--tier", "smoke", "--profile", "single-thread", "--method", "int3-magic",
                 "--out", str(tmp_path)]) == 2
    assert "unknown method 'int3-magic'" in capsys.readouterr().err
    assert main(["bench", "--tier", "smoke", "--arch", "resnet50", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "unknown --arch 'resnet50'; known: vgg4bit, simpleresnet4bit" in err and "\n" not in err
    assert list(tmp_path.iterdir()) == []


def test_paper_tier_refuses_to_run_without_cifar10(tmp_path):
    with pytest.raises(UserError, match="needs real CIFAR-10"):
        bench.plan_data(bench.get_tier("paper"), str(tmp_path / "empty"), tmp_path, allow_download=False, seed=0)


def test_quick_tier_without_cifar10_falls_back_and_says_why(tmp_path):
    plan = bench.plan_data(bench.get_tier("quick"), str(tmp_path / "empty"), tmp_path, allow_download=False, seed=0)
    assert plan.kind == "synthetic" and "not found" in plan.note


def test_accuracy_profile_is_the_widest_that_fits():
    chosen = bench.pick_accuracy_profile([profile("one", 1), profile("two", 2), profile("huge", 64)], host_cpus=2)
    assert chosen.name == "two"


def test_profile_command_prints_the_fingerprint(capsys):
    assert main(["profile"]) == 0
    assert json.loads(capsys.readouterr().out)["host_id"]


def test_arms_per_precision_and_the_cuda_refusal(tmp_path):
    cpu = profile("one", 1)
    assert [a["name"] for a in bench.arms_for(cpu, ["fp32", "tathe4"], set())] == ["fp32", "tathe4"]
    assert [a["name"] for a in bench.arms_for(cpu, ["fp32", "tathe4"], {"avx512_bf16"})] == [
        "fp32", "tathe4", "fp32@bf16", "tathe4@bf16"]
    profiles = tmp_path / "profiles"
    write_profile(profiles, "pinned", 'description = "fp32 only"\nthreads = 1\nprecision = "fp32"\n')
    write_profile(profiles, "gpu", 'description = "a GPU"\nthreads = 1\ndevice = "cuda"\n')
    from suite.profiles import resolve_profile

    pinned = resolve_profile("pinned", profiles)
    assert pinned.precisions({"amx_bf16"}) == ["fp32"]
    gpu = resolve_profile("gpu", profiles)
    assert gpu.device == "cuda" and gpu.precisions(set()) == ["fp32", "bf16"]
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(UserError, match="device 'cuda' but no CUDA GPU"):
            bench.run_bench(bench.BenchConfig(profiles=["gpu"], tier="smoke", out=str(tmp_path / "r"),
                                              profiles_dir=str(profiles)), log=lambda line: None)
        assert not (tmp_path / "r").exists()


def test_the_layout_trial_times_variants_against_channels_last_and_compares_their_training(tmp_path):
    """tools/layout_trial.py, whose measurement docs/benchmarking.md quotes: runs as documented (compile left
    out here: it needs minutes) and writes what it says, the reference variant equal to itself."""
    out = tmp_path / "trial.json"
    tool = Path(__file__).resolve().parents[1] / "tools" / "layout_trial.py"
    done = subprocess.run([sys.executable, str(tool), "--method", "fp32", "--variant", "contiguous", "--windows", "2",
                           "--steps", "1", "--sgemm-n", "256", "--out", str(out)], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    doc = json.loads(out.read_text())
    assert doc["arch"] == "simpleresnet4bit" and doc["batch_size"] == 128 and doc["threads"] == 1
    assert doc["variants"] == ["channels_last", "contiguous"] and doc["provenance"]["code"]["commit"]
    found = doc["methods"]["fp32"]
    assert found["equality"]["channels_last"]["max_abs_param_diff"] == 0.0
    assert found["equality"]["contiguous"]["steps"] == 20
    assert found["timing"]["step_time_ratio"]["channels_last"]["median"] == 1.0
    assert found["timing"]["step_time_ratio"]["contiguous"]["median"] > 0
    assert "fp32 contiguous: " in done.stdout and f"written {out}" in done.stdout
