"""Which way of running a network's training step is fastest on this CPU, and does it train the same?

    python tools/layout_trial.py --arch simpleresnet4bit --threads 1 --out reports/submitted/HOST/layout-trial.json

Variants of one method's step at the recipe's batch (128), all from the same initial weights:
  channels_last  the suite's layout (suite/model.py): oneDNN's native CPU format
  contiguous     the same network in NCHW (model.set_memory_format)
  compiled       channels_last with the whole forward compiled by torch.compile (inductor; needs a C compiler)
Timing: suite.measure's interleaved windows (each variant once in every position per cycle) and its median
step-time ratios against channels_last, as the bench times methods. Equality: STEPS optimizer steps of each
variant on the same batches, then the largest difference of any parameter (master weights, biases,
BatchNorm affine; not the running statistics) and of the last loss from channels_last's (0.0 = bit for bit). Writes one JSON file with the host, versions and commit."""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from suite import data as datamod  # noqa: E402
from suite import measure  # noqa: E402
from suite.atomic import write_json_atomic  # noqa: E402
from suite.measure.host import host_fingerprint, load_average  # noqa: E402
from suite.methods import get_method  # noqa: E402
from suite.model import set_memory_format  # noqa: E402
from suite.provenance import stamp  # noqa: E402
from suite.threads import torch_threads  # noqa: E402
from suite.train import StepOptions, Stepper, build_model, get_recipe, make_optimizer  # noqa: E402

VARIANTS = ("channels_last", "contiguous", "compiled")
BATCH = 128  # the paper recipe's: a variant must not change what is trained
EQUALITY_STEPS = 20  # steps before parameters are compared: enough for rounding differences to show


def build(variant: str, arch: str, method_name: str, seed: int):
    torch.manual_seed(seed)
    method = get_method(method_name)
    model, quantizers = build_model(method, 10, arch)
    if variant == "contiguous":
        set_memory_format(model, torch.contiguous_format)
    forward = torch.compile(model) if variant == "compiled" else model
    model.train()
    optimizer = make_optimizer(model, get_recipe("paper"))
    return model, Stepper(forward, method, optimizer, quantizers, total_steps=10**6, options=StepOptions())


def batches(count: int, seed: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Random uint8 images through the real batch path (crop, flip, normalise): content does not change time."""
    generator = torch.Generator().manual_seed(seed)
    split = datamod.Split(torch.randint(0, 256, (count * BATCH, 3, 32, 32), dtype=torch.uint8, generator=generator),
                          torch.randint(0, 10, (count * BATCH,), generator=generator))
    return list(datamod.batches(split, BATCH, generator, train=True))[:count]


def equality(arch: str, method: str, seed: int, variants: list[str]) -> dict:
    """Per variant: the largest parameter and last-loss difference from channels_last after EQUALITY_STEPS."""
    data = batches(EQUALITY_STEPS, seed)
    trained = {}
    for variant in variants:
        model, stepper = build(variant, arch, method, seed)
        for images, labels in data:
            loss = float(stepper(images, labels)[0])
        trained[variant] = ({k: v.detach().clone() for k, v in model.named_parameters()}, loss)
    reference, reference_loss = trained["channels_last"]
    out = {}
    for variant, (params, loss) in trained.items():
        diffs = [(params[k] - reference[k]).abs().max().item() for k in reference]
        out[variant] = {"max_abs_param_diff": max(diffs), "last_loss": loss,
                        "last_loss_diff": abs(loss - reference_loss), "steps": EQUALITY_STEPS}
    return out


def timing(arch: str, method: str, seed: int, windows: int, steps: int, variants: list[str]) -> dict:
    steppers = {variant: build(variant, arch, method, seed)[1] for variant in variants}
    data = batches(steps, seed + 1)
    source = iter(data * (windows + 2))
    plan = measure.WindowPlan(warmup_steps=3, windows=-(-windows // len(variants)) * len(variants),
                              steps_per_window=steps)
    meters = {v: measure.EnergyMeter(measure.RaplReader(Path("/nonexistent"))) for v in variants}
    started = time.perf_counter()  # the first windows include torch.compile's compile
    seconds = measure.interleaved_training_windows(steppers, lambda: next(source), plan, meters)
    ratios = measure.ratio_estimates(seconds, "channels_last")
    flops = measure.train_flops_per_image(steppers["channels_last"].model)
    rates = {v: BATCH * steps / statistics.median(s) for v, s in seconds.items()}
    return {"windows": plan.windows, "steps_per_window": steps, "wall_seconds": time.perf_counter() - started,
            "images_per_s_median": rates, "achieved_gflops": {v: flops * r / 1e9 for v, r in rates.items()},
            "step_time_ratio": ratios, "window_seconds": seconds}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--arch", default="simpleresnet4bit")
    p.add_argument("--method", action="append", help="default: fp32 and tathe4")
    p.add_argument("--variant", action="append", choices=VARIANTS, help="default: all; channels_last always")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--windows", type=int, default=12)
    p.add_argument("--steps", type=int, default=4, help="steps per timed window")
    p.add_argument("--sgemm-n", type=int, default=2048)
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    variants = list(dict.fromkeys(["channels_last", *(args.variant or VARIANTS)]))
    started, load_start = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), load_average()
    with torch_threads(args.threads):
        probe = measure.SgemmProbe(args.sgemm_n)
        for _ in range(5):
            probe.sample()
        methods = {}
        for method in args.method or ["fp32", "tathe4"]:
            methods[method] = {"equality": equality(args.arch, method, 0, variants),
                               "timing": timing(args.arch, method, 0, args.windows, args.steps, variants)}
            probe.sample()
        sgemm = probe.result()
    doc = {"what": "tools/layout_trial.py", "created_utc": started, "arch": args.arch, "threads": args.threads,
           "batch_size": BATCH, "variants": variants, "sgemm": sgemm, "methods": methods,
           "load_average": {"start": load_start, "end": load_average()}, "host": host_fingerprint(),
           "provenance": stamp()}
    write_json_atomic(Path(args.out), doc)
    for method, found in methods.items():
        t = found["timing"]
        for v in variants:
            r, e = t["step_time_ratio"][v], found["equality"][v]
            print(f"{method} {v}: {t['images_per_s_median'][v]:.0f} img/s, {t['achieved_gflops'][v]:.1f} GFLOP/s "
                  f"({t['achieved_gflops'][v] / sgemm['gflops']:.2f} of SGEMM {sgemm['gflops']:.0f}), step "
                  f"{r['median']:.3f}x channels_last [{r['low']:.3f}-{r['high']:.3f}]; after {e['steps']} steps max "
                  f"|param diff| {e['max_abs_param_diff']:.3g}, loss diff {e['last_loss_diff']:.3g}")
    print(f"written {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
