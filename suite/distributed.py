"""Training across processes and machines with PyTorch's own engine: torchrun starts the ranks and sets
RANK / WORLD_SIZE / LOCAL_RANK / LOCAL_WORLD_SIZE / MASTER_ADDR; q4bench joins a gloo process group and
wraps the model in DistributedDataParallel. Nothing here launches processes: that is torchrun's job.

What a rank does (suite/train.py): reads its shard of every global batch (positions rank, rank+W, ... of the
batch, which is what DistributedSampler hands out when W divides the batch), averages gradients with DDP,
all-reduces the epoch's metrics, scores its share of the test set, and leaves every file write to rank 0.
BatchNorm statistics stay per rank (gloo on CPU has no SyncBatchNorm): each rank normalises its local
batch of 128 / W images, as DDP on CPU does everywhere; rank 0's running statistics are broadcast before
each evaluation and checkpoint, so all ranks score with the weights the checkpoint holds."""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import signal
from dataclasses import dataclass
from typing import Any, Iterator, Mapping

import torch
import torch.distributed as dist

from .errors import UserError

BACKEND = "gloo"
# A collective that waits longer than this for a peer ends the job (a rank killed mid-step is usually seen
# at once, when its sockets close; this bounds the case where a machine vanishes without closing them).
COLLECTIVE_TIMEOUT = dt.timedelta(minutes=10)


@dataclass(frozen=True)
class World:
    """Where this process stands among the job's ranks (one process alone: rank 0 of 1)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0
    local_size: int = 1

    def __post_init__(self):
        if not (0 <= self.rank < self.size and 0 <= self.local_rank < self.local_size <= self.size):
            raise UserError(f"inconsistent torchrun environment: rank {self.rank} of {self.size}, "
                            f"local rank {self.local_rank} of {self.local_size}")

    @property
    def distributed(self) -> bool:
        return self.size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def nodes(self) -> int:
        return max(1, self.size // self.local_size)

    def describe(self) -> str:
        if not self.distributed:
            return "1 process"
        return (f"rank {self.rank} of {self.size} ({self.nodes} node(s) x {self.local_size} local ranks), "
                f"DDP over {BACKEND}")


def world_from_env(env: Mapping[str, str] = os.environ) -> World:
    """The World torchrun describes in the environment; rank 0 of 1 when not started by torchrun."""
    if "WORLD_SIZE" not in env:
        return World()
    try:
        size = int(env["WORLD_SIZE"])
        return World(rank=int(env.get("RANK", 0)), size=size, local_rank=int(env.get("LOCAL_RANK", 0)),
                     local_size=int(env.get("LOCAL_WORLD_SIZE", size)))
    except ValueError:
        raise UserError("torchrun environment: RANK, WORLD_SIZE, LOCAL_RANK and LOCAL_WORLD_SIZE must be "
                        "integers") from None


def threads_per_rank(world: World, cores: int) -> int:
    """torchrun sets OMP_NUM_THREADS=1 for every rank; q4bench instead splits the machine's cores between
    its local ranks, so 2 ranks on 2 cores get 1 thread each and 1 rank on 16 cores gets 16."""
    return max(1, cores // world.local_size)


# BatchNorm needs at least 2 images per rank per step (the same floor as --batch-size for one process).
MIN_LOCAL_BATCH = 2


def split_batch(global_batch: int, ranks: int, how: str = "ranks") -> int:
    """Images per rank per step: the global batch split evenly, at least MIN_LOCAL_BATCH each; anything else
    is refused in one line (``how`` names the ranks as the user set them, e.g. --ranks-per-run 2)."""
    if global_batch % ranks:
        raise UserError(f"the global batch of {global_batch} images does not split evenly over {ranks} {how}; "
                        f"pass a --batch-size divisible by {ranks}")
    if global_batch // ranks < MIN_LOCAL_BATCH:
        raise UserError(f"the global batch of {global_batch} images gives each of {ranks} {how} "
                        f"{global_batch // ranks}; BatchNorm needs {MIN_LOCAL_BATCH} per rank: pass a --batch-size "
                        f"of at least {MIN_LOCAL_BATCH * ranks}")
    return global_batch // ranks


def local_batch_size(global_batch: int, world: World) -> int:
    """Images per rank per step of this job (split_batch over its ranks)."""
    return split_batch(global_batch, world.size)


class PeerLost(Exception):
    """A collective failed because another rank died or the network between them broke."""


class StoppedByLauncher(Exception):
    """torchrun sent SIGTERM, which its agent does when another rank of the job failed."""


@contextlib.contextmanager
def process_group(world: World) -> Iterator[None]:
    """Join (and afterwards leave) the job's gloo group; nothing for a single process. Inside it, a failed
    collective becomes PeerLost and torchrun's SIGTERM becomes StoppedByLauncher, so the CLI can say in one
    line what happened instead of printing gloo's traceback."""
    if not world.distributed:
        yield
        return
    if not dist.is_available() or not dist.is_gloo_available():
        raise UserError("this torch build has no gloo backend; torch.distributed cannot run here")
    dist.init_process_group(BACKEND, rank=world.rank, world_size=world.size, timeout=COLLECTIVE_TIMEOUT)

    def on_sigterm(signum, frame):
        raise StoppedByLauncher()

    previous = signal.signal(signal.SIGTERM, on_sigterm)
    try:
        yield
        # Leave together: a rank that tears gloo down while its peer still writes the run's files was seen to
        # abort ("terminate called without an active exception", SIGABRT) under load.
        dist.barrier()
    except RuntimeError as exc:  # gloo's errors (DistBackendError included) are RuntimeErrors
        if isinstance(exc, dist.DistError) or "gloo" in str(exc).lower() or "connection" in str(exc).lower():
            raise PeerLost(str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
        raise
    finally:
        signal.signal(signal.SIGTERM, previous)
        with contextlib.suppress(Exception):  # after a lost peer the group cannot shut down cleanly
            dist.destroy_process_group()


def broadcast_from_main(world: World, value: Any) -> Any:
    """Rank 0's value on every rank (a decision, an error message, a checkpoint's state). The objects travel
    pickled between the job's own ranks, never from a file."""
    if not world.distributed:
        return value
    box = [value if world.is_main else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def sum_over_ranks(world: World, *values: float) -> list[float]:
    """Each value summed over all ranks (float64, one all-reduce)."""
    if not world.distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def max_over_ranks(world: World, value: float) -> float:
    if not world.distributed:
        return value
    t = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return float(t)


def mean_over_ranks(world: World, value: torch.Tensor) -> torch.Tensor:
    """A 0-d tensor averaged over ranks (the step's loss for a method that reads it, e.g. PFQ)."""
    if not world.distributed:
        return value
    t = value.detach().to(torch.promote_types(value.dtype, torch.float32), copy=True)  # bf16 -> fp32
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t / world.size


@torch.no_grad()
def broadcast_buffers_from_main(world: World, module: torch.nn.Module) -> None:
    """BatchNorm running statistics (every floating buffer) of rank 0 on every rank."""
    if not world.distributed:
        return
    for buffer in module.buffers():
        dist.broadcast(buffer, src=0)


def gather_predictions(world: World, local: torch.Tensor, total: int) -> torch.Tensor:
    """The test set's predictions in order, from each rank's contiguous share (see eval_share)."""
    if not world.distributed:
        return local
    share = -(-total // world.size)
    padded = torch.zeros(share, dtype=torch.int64)
    padded[: local.numel()] = local
    parts = [torch.zeros(share, dtype=torch.int64) for _ in range(world.size)]
    dist.all_gather(parts, padded)
    return torch.cat([part[: len(range(*eval_share(r, world.size, total)))] for r, part in enumerate(parts)])


def eval_share(rank: int, size: int, total: int) -> tuple[int, int]:
    """[start, stop) of the test images rank scores: contiguous shares of ceil(total / size)."""
    share = -(-total // size)
    return min(rank * share, total), min((rank + 1) * share, total)


def wrap(model: torch.nn.Module, world: World) -> torch.nn.Module:
    """The model DDP-wrapped for training (the model itself for one process). Buffers are not broadcast at
    every forward (they move once per epoch, broadcast_buffers_from_main): the per-step traffic is the
    gradient all-reduce alone, which is what the bench's all-reduce share measures."""
    if not world.distributed:
        return model
    import inspect

    from torch.nn.parallel import DistributedDataParallel

    # torch 2.13 renamed the switch (forward_sync_buffers); older releases, which we also support, know only
    # broadcast_buffers. Both still copy rank 0's buffers once, at construction.
    if "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters:
        return DistributedDataParallel(model, forward_sync_buffers=False)
    return DistributedDataParallel(model, broadcast_buffers=False)
