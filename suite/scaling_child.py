"""One rank of the bench's scaling measurement, started by suite.scaling under torchrun. Within one job it
interleaves four kinds of timed window, rotating their order every round:

  one          rank 0 alone trains a plain (not DDP) copy of the network on the whole global batch with the
               per-rank thread count, while the other ranks wait in a barrier: the 1-process reference T1;
  one_all      the same with all the job's local threads: what one process on the same cores achieves;
  ddp          every rank trains its shard of the global batch, gradients all-reduced (q4bench train's step):
               TN, the slowest rank's time;
  ddp_no_sync  the same under DDP's no_sync(): no gradient all-reduce, so ddp minus this is the exposed
               all-reduce cost of a step.

Each window: a barrier, one untimed step (thread-count changes and caches settle), a barrier, then `steps`
timed steps. Rank 0 writes the per-step seconds of every window as JSON."""

from __future__ import annotations

import argparse
import contextlib
import json
import time

import torch
import torch.distributed as dist

from . import data as datamod
from . import distributed as D
from .atomic import write_json_atomic
from .methods import get_method
from .train import StepOptions, Stepper, build_model, get_recipe, make_optimizer

KINDS = ("one", "one_all", "ddp", "ddp_no_sync")


def _stepper(method_name: str, world: D.World, wrap: bool) -> Stepper:
    method = get_method(method_name)
    torch.manual_seed(0)
    model, quantizers = build_model(method, 10)
    optimizer = make_optimizer(model, get_recipe("paper"))
    forward = D.wrap(model, world) if wrap else model
    return Stepper(forward, method, optimizer, quantizers, total_steps=10**6, options=StepOptions(world=world))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m suite.scaling_child")
    parser.add_argument("--out", required=True)
    parser.add_argument("--method", default="tathe4")
    parser.add_argument("--global-batch", type=int, default=128)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1, help="threads per rank")
    args = parser.parse_args(argv)
    world = D.world_from_env()
    local_batch = D.local_batch_size(args.global_batch, world)
    all_threads = args.threads * world.local_size
    with D.process_group(world):
        # Random uint8 images through the real batch path (crop, flip, normalise): content does not change time.
        split = datamod.Split(torch.randint(0, 256, (4 * args.global_batch, 3, 32, 32), dtype=torch.uint8),
                              torch.randint(0, 10, (4 * args.global_batch,)))
        ddp = _stepper(args.method, world, wrap=True)
        alone = _stepper(args.method, world, wrap=False) if world.is_main else None
        generator = torch.Generator().manual_seed(0)

        def batch(shard: tuple[int, int], size: int):
            while True:
                yield from datamod.batches(split, size, generator, True, shard)

        solo_batches = batch((0, 1), args.global_batch)
        ddp_batches = batch((world.rank, world.size), args.global_batch)

        def window(kind: str) -> float:
            solo = kind.startswith("one")
            active = world.is_main or not solo  # in a solo window the other ranks only wait
            torch.set_num_threads(all_threads if kind == "one_all" else args.threads)
            stepper, batches = (alone, solo_batches) if solo else (ddp, ddp_batches)
            sync = ddp.model.no_sync() if kind == "ddp_no_sync" and world.distributed else contextlib.nullcontext()
            seconds = 0.0
            with sync:
                if active:
                    stepper(*next(batches))
                _barrier(world)
                if active:
                    start = time.perf_counter()
                    for _ in range(args.steps):
                        loss, _ = stepper(*next(batches))
                    float(loss)
                    seconds = (time.perf_counter() - start) / args.steps
            _barrier(world)
            return D.max_over_ranks(world, seconds)  # a DDP step ends when its slowest rank does

        per_kind: dict[str, list[float]] = {k: [] for k in KINDS}
        for round_index in range(args.rounds):
            order = KINDS[round_index % len(KINDS):] + KINDS[:round_index % len(KINDS)]
            for kind in order:
                per_kind[kind].append(window(kind))
        if world.is_main:
            write_json_atomic(args.out, {
                "world_size": world.size, "local_batch": local_batch, "threads_per_rank": args.threads,
                "all_threads": all_threads, "step_seconds": per_kind,
                "orders": [list(KINDS[r % 4:] + KINDS[:r % 4]) for r in range(args.rounds)],
            })


def _barrier(world: D.World) -> None:
    if world.distributed:
        dist.barrier()


if __name__ == "__main__":
    main()
