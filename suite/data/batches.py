"""Batches of a split: shuffled, augmented and normalised on whole uint8 batches with tensor indexing (the paper's
4-pixel zero pad, random 32x32 crop and horizontal flip), so no worker processes compete with training for the
cores; a distributed run's shard of every global batch."""

from __future__ import annotations

from typing import Iterator

import torch

from .cifar import Split

# The paper's normalisation (its code uses the CIFAR-10 values for CIFAR-100 too).
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2023, 0.1994, 0.2010)


def augment(images: torch.Tensor, generator: torch.Generator, padding: int = 4) -> torch.Tensor:
    """RandomCrop(32, padding=4) then RandomHorizontalFlip on a uint8 batch (B, C, H, W), in one gather."""
    return crop_and_flip(images, *_draw_augmentation(images.shape[0], generator, padding), padding=padding)


def _draw_augmentation(n: int, generator: torch.Generator, padding: int = 4):
    """(dy, dx, flip) for n images, drawn on the CPU generator in a fixed order, so a run draws the same
    numbers whatever device holds the images."""
    dy = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    return dy, dx, flip


def crop_and_flip(
    images: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor, flip: torch.Tensor, padding: int = 4
) -> torch.Tensor:
    """The crop/flip gather with given offsets; everything on the images' device."""
    n, c, h, w = images.shape
    device = images.device
    padded = torch.nn.functional.pad(images, (padding, padding, padding, padding))
    rows = dy[:, None] + torch.arange(h, device=device)
    cols = dx[:, None] + torch.arange(w, device=device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)  # a flipped crop reads its columns backwards
    return padded[
        torch.arange(n, device=device)[:, None, None, None],
        torch.arange(c, device=device)[None, :, None, None],
        rows[:, None, :, None],
        cols[:, None, None, :],
    ]


_SCALE = torch.tensor([1.0 / (255.0 * s) for s in STD]).view(1, 3, 1, 1)
_SHIFT = torch.tensor([m / s for m, s in zip(MEAN, STD)]).view(1, 3, 1, 1)


_CONSTANTS_ON: dict[torch.device, tuple[torch.Tensor, torch.Tensor]] = {}


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 -> float32, (x/255 - mean)/std, on the images' device."""
    device = images.device
    if device not in _CONSTANTS_ON:  # copied once per device: a copy per batch would stall a GPU on the host
        _CONSTANTS_ON[device] = (_SCALE.to(device), _SHIFT.to(device))
    scale, shift = _CONSTANTS_ON[device]
    return images.to(torch.float32).mul_(scale).sub_(shift)


def batches(
    split: Split,
    batch_size: int,
    generator: torch.Generator | None = None,
    train: bool = False,
    shard: tuple[int, int] = (0, 1),
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Shuffled, augmented batches when train (generator required); in order otherwise. The split may sit
    on any device: the random numbers are drawn on the CPU generator for the whole epoch first (the same
    sequence as drawing them batch by batch) and moved once, so a GPU epoch never waits on the host.

    shard = (rank, ranks): training batches of a distributed run. Every rank draws the whole epoch's order
    and augmentation and keeps positions rank, rank + ranks, ... of each global batch of batch_size: the
    global batches, and each image's crop and flip, are those of a single process (DistributedSampler's split
    when ranks divides batch_size)."""
    rank, ranks = shard
    n = len(split)
    device = split.images.device
    if not train:
        for start in range(0, n, batch_size):
            yield normalize(split.images[start : start + batch_size]), split.labels[start : start + batch_size]
        return
    order = torch.randperm(n, generator=generator)
    # BatchNorm needs 2 images per rank: a last global batch too small for that is left out on every rank.
    starts = [s for s in range(0, n, batch_size) if min(batch_size, n - s) >= 2 * ranks]
    draws = [_draw_augmentation(min(batch_size, n - s), generator) for s in starts]
    if device.type != "cpu":
        order = order.to(device, non_blocking=True)
        draws = [tuple(t.to(device, non_blocking=True) for t in d) for d in draws]
    for start, (dy, dx, flip) in zip(starts, draws):
        index = order[start : start + batch_size]
        if ranks > 1:
            index, dy, dx, flip = index[rank::ranks], dy[rank::ranks], dx[rank::ranks], flip[rank::ranks]
        yield normalize(crop_and_flip(split.images[index], dy, dx, flip)), split.labels[index]


def num_train_batches(n: int, batch_size: int, ranks: int = 1) -> int:
    """Optimizer steps per epoch: a tail batch is kept when every rank gets at least 2 of its images."""
    full, rest = divmod(n, batch_size)
    return full + (1 if rest >= 2 * ranks else 0)
