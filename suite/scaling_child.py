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
timed steps. A task child (suite/child.py) under torchrun: every rank reads the plan from TASK.json, rank 0
writes the per-step seconds of every window to RESULT.json."""

from __future__ import annotations

import contextlib
import sys
import time

import torch
import torch.distributed as dist

from . import data as datamod
from . import distributed as D
from .child import serve
from .methods import get_method
from .scaling import ScalingPlan
from .train import StepOptions, Stepper, build_model, get_recipe, make_optimizer

KINDS = ("one", "one_all", "ddp", "ddp_no_sync")


def _stepper(method_name: str, arch: str, world: D.World, wrap: bool) -> Stepper:
    method = get_method(method_name)
    torch.manual_seed(0)
    model, quantizers = build_model(method, 10, arch)
    optimizer = make_optimizer(model, get_recipe("paper"))
    forward = D.wrap(model, world) if wrap else model
    return Stepper(forward, method, optimizer, quantizers, total_steps=10**6, options=StepOptions(world=world))


def _order(round_index: int) -> tuple[str, ...]:
    """The window kinds of one round, rotated so that each kind takes every position in turn."""
    shift = round_index % len(KINDS)
    return KINDS[shift:] + KINDS[:shift]


class Windows:
    """One rank's side of the measurement: the DDP stepper, rank 0's plain copy, their batches, and the
    timed window of each kind."""

    def __init__(self, plan: ScalingPlan, world: D.World):
        self.plan, self.world = plan, world
        self.all_threads = plan.threads_per_process * world.local_size
        # Random uint8 images through the real batch path (crop, flip, normalise): content does not change time.
        images = 4 * plan.global_batch
        self.split = datamod.Split(torch.randint(0, 256, (images, 3, 32, 32), dtype=torch.uint8),
                                   torch.randint(0, 10, (images,)))
        self.ddp = _stepper(plan.method, plan.arch, world, wrap=True)
        self.alone = _stepper(plan.method, plan.arch, world, wrap=False) if world.is_main else None
        self.generator = torch.Generator().manual_seed(0)
        self.solo_batches = self._batches((0, 1))
        self.ddp_batches = self._batches((world.rank, world.size))

    def _batches(self, shard: tuple[int, int]):
        while True:
            yield from datamod.batches(self.split, self.plan.global_batch, self.generator, True, shard)

    def timed(self, kind: str) -> float:
        """Seconds per step of one window of ``kind``, the slowest rank's (a DDP step ends when it does)."""
        world, steps = self.world, self.plan.steps_per_window
        solo = kind.startswith("one")
        active = world.is_main or not solo  # in a solo window the other ranks only wait
        torch.set_num_threads(self.all_threads if kind == "one_all" else self.plan.threads_per_process)
        stepper, batches = (self.alone, self.solo_batches) if solo else (self.ddp, self.ddp_batches)
        no_sync = kind == "ddp_no_sync" and world.distributed
        seconds = 0.0
        with self.ddp.model.no_sync() if no_sync else contextlib.nullcontext():
            if active:
                stepper(*next(batches))
            _barrier(world)
            if active:
                start = time.perf_counter()
                for _ in range(steps):
                    loss, _ = stepper(*next(batches))
                float(loss)
                seconds = (time.perf_counter() - start) / steps
        _barrier(world)
        return D.max_over_ranks(world, seconds)


def measure(task: dict) -> dict | None:
    """Every round's windows, in rotating order; rank 0's result (None on the other ranks)."""
    plan = ScalingPlan(**task)
    world = D.world_from_env()
    per_kind: dict[str, list[float]] = {k: [] for k in KINDS}
    with D.process_group(world):
        windows = Windows(plan, world)
        for round_index in range(plan.rounds):
            for kind in _order(round_index):
                per_kind[kind].append(windows.timed(kind))
    if not world.is_main:
        return None
    return {
        "world_size": world.size, "local_batch": D.local_batch_size(plan.global_batch, world),
        "threads_per_rank": plan.threads_per_process, "all_threads": windows.all_threads, "step_seconds": per_kind,
        "orders": [list(_order(r)) for r in range(plan.rounds)],
    }


def main(argv: list[str]) -> int:
    return serve(argv, measure)


def _barrier(world: D.World) -> None:
    if world.distributed:
        dist.barrier()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
