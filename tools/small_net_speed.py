"""How fast a small network trains on this CPU, and what the ecosystem's knobs change: the training step of
each method in each variant (channels_last, the default; NCHW; torch.compile of the model), timed in
interleaved windows in one process (medians, ratios to the default of the same method), the network's
convolutions timed pass by pass, and an SGEMM probe as the yardstick. Before timing, each variant trains a
few steps from the same weights on the same batches as the default: bitwise equal, or the largest
difference is reported (a faster variant is adoptable only if it trains the same within a stated tolerance).

Run it on an otherwise idle machine (load average is recorded before and after):
    .venv/bin/python tools/small_net_speed.py --arch simpleresnet4bit --threads 1 --out small_net_speed.json
Batches are random images (the step's cost does not depend on the pixels); the batch is the recipe's 128."""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from suite import measure, provenance  # noqa: E402
from suite.atomic import write_json_atomic  # noqa: E402
from suite.methods import get_method  # noqa: E402
from suite.model import set_memory_format  # noqa: E402
from suite.train import Stepper, build_model, get_recipe, make_optimizer  # noqa: E402

BATCH = 128  # the paper recipe's batch: a speed knob that changes the recipe is not a speed-up
VARIANTS = ("channels_last", "nchw", "compile")
DEFAULT_VARIANT = "channels_last"  # what the models use today


def make_stepper(method_name: str, arch: str, variant: str, seed: int = 0) -> tuple[torch.nn.Module, Stepper]:
    method = get_method(method_name)
    torch.manual_seed(seed)  # every variant starts from the same weights
    model, quantizers = build_model(method, 10, arch)
    if variant == "nchw":
        set_memory_format(model, torch.contiguous_format)
    model.train()
    optimizer = make_optimizer(model, get_recipe("paper"))
    forward = torch.compile(model) if variant == "compile" else model
    return model, Stepper(forward, method, optimizer, quantizers, total_steps=10**6)


def random_batches(count: int, seed: int = 1) -> list[tuple[torch.Tensor, torch.Tensor]]:
    generator = torch.Generator().manual_seed(seed)
    return [(torch.randn(BATCH, 3, 32, 32, generator=generator), torch.randint(0, 10, (BATCH,), generator=generator))
            for _ in range(count)]


def training_difference(method: str, arch: str, variant: str, steps: int) -> dict:
    """Train `steps` steps in the default layout and in `variant` from the same start; how far apart they end."""
    batches = random_batches(steps)
    ends = {}
    for name in (DEFAULT_VARIANT, variant):
        model, stepper = make_stepper(method, arch, name)
        losses = [float(stepper(*batch)[0]) for batch in batches]
        ends[name] = (losses, [p.detach().clone() for p in model.parameters()])
    (loss_a, params_a), (loss_b, params_b) = ends[DEFAULT_VARIANT], ends[variant]
    param_diff = max(float((a - b).abs().max()) for a, b in zip(params_a, params_b))
    return {"steps": steps, "bitwise_equal": param_diff == 0.0 and loss_a == loss_b,
            "max_param_abs_diff": param_diff, "max_loss_abs_diff": max(abs(a - b) for a, b in zip(loss_a, loss_b))}


def timed_windows(methods: list[str], arch: str, variants: list[str], plan: measure.WindowPlan,
                  probe: measure.SgemmProbe) -> dict[str, list[float]]:
    steppers = {f"{m}/{v}": make_stepper(m, arch, v)[1] for m in methods for v in variants}
    meters = {name: measure.EnergyMeter(measure.RaplReader()) for name in steppers}
    batches = iter(random_batches(plan.steps_per_window))
    return measure.interleaved_training_windows(steppers, lambda: next(batches), plan, meters, probe.sample)


def summarise(seconds: dict[str, list[float]], methods: list[str], variants: list[str], flops_per_image: int,
              sgemm_gflops: float, images_per_window: int) -> dict:
    arms = {}
    for method in methods:
        base = seconds[f"{method}/{DEFAULT_VARIANT}"]
        for variant in variants:
            name = f"{method}/{variant}"
            ratios = [s / b for s, b in zip(seconds[name], base)]  # per round: drift hits both alike
            images_per_s = images_per_window / statistics.median(seconds[name])
            achieved = flops_per_image * images_per_s / 1e9
            arms[name] = {"images_per_s": images_per_s, "achieved_gflops": achieved,
                          "efficiency_vs_sgemm": achieved / sgemm_gflops,
                          "step_time_vs_default_median": statistics.median(ratios),
                          "step_time_vs_default_range": [min(ratios), max(ratios)]}
    return arms


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--arch", default="simpleresnet4bit")
    parser.add_argument("--methods", default="fp32,tathe4")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--windows", type=int, default=9)
    parser.add_argument("--steps-per-window", type=int, default=10)
    parser.add_argument("--warmup-steps", type=int, default=5)
    parser.add_argument("--equal-steps", type=int, default=5)
    parser.add_argument("--sgemm-n", type=int, default=1024)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    methods, variants = args.methods.split(","), args.variants.split(",")
    load_before = measure.load_average()
    equality = {f"{m}/{v}": training_difference(m, args.arch, v, args.equal_steps)
                for m in methods for v in variants if v != DEFAULT_VARIANT}
    probe = measure.SgemmProbe(args.sgemm_n)
    plan = measure.WindowPlan(args.warmup_steps, args.windows, args.steps_per_window)
    seconds = timed_windows(methods, args.arch, variants, plan, probe)
    model, _ = make_stepper(methods[0], args.arch, DEFAULT_VARIANT)
    flops = measure.train_flops_per_image(model)
    sgemm = probe.result()
    convs = {fmt: measure.conv_kernel_rates(set_memory_format(make_stepper("fp32", args.arch, DEFAULT_VARIANT)[0],
                                                              layout), BATCH, 9)
             for fmt, layout in (("channels_last", torch.channels_last), ("nchw", torch.contiguous_format))}
    result = {
        "what": "training step time per method and variant, interleaved windows, medians (measured)",
        "arch": args.arch, "threads": args.threads, "batch": BATCH, "plan": vars(plan),
        "host": {"cpu_model": measure.host_fingerprint().get("cpu_model"), "machine": platform.machine(),
                 "isa_caps": measure.isa_caps()},
        "load_average_before": load_before, "load_average_after": measure.load_average(),
        "flops_per_image": flops, "flop_convention": measure.FLOP_CONVENTION, "sgemm": sgemm,
        "arms": summarise(seconds, methods, variants, flops, sgemm["gflops"], BATCH * args.steps_per_window),
        "window_seconds": seconds, "training_equality": equality, "conv_passes": convs,
        "provenance": provenance.stamp(command=" ".join(["tools/small_net_speed.py", *(argv or sys.argv[1:])])),
    }
    write_json_atomic(args.out, result)
    for name, arm in result["arms"].items():
        print(f"{name}: {arm['images_per_s']:.0f} img/s, {arm['achieved_gflops']:.1f} GFLOP/s "
              f"({arm['efficiency_vs_sgemm']:.0%} of SGEMM), step {arm['step_time_vs_default_median']:.3f}x default")
    print(f"SGEMM {sgemm['gflops']:.1f} GFLOP/s; load {load_before} -> {result['load_average_after']}; wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
