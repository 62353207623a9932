"""Test helper, started by tests/test_distributed.py under torchrun (or alone for one process): a few tathe4
steps in float64 on synthetic data with q4bench's own Stepper and data sharding; rank 0 writes per step the
global loss and whether every rank computed the same per-layer 4-bit scales.

--ghost G (one process only): BatchNorm over G interleaved sub-batches (positions r, r+G, ... of the batch),
which is exactly what G DDP ranks normalise over; the loss trajectory must then match DDP's to rounding.
Dropout is switched off so both sides draw nothing random in the network."""

from __future__ import annotations

import argparse
import json

import torch
import torch.distributed as dist

from suite import data as datamod
from suite import distributed as D
from suite.methods import get_method
from suite.methods.tathe import symmetric_scale
from suite.model import quant_layers
from suite.train import StepOptions, Stepper, build_model, get_recipe, make_optimizer


class GhostBatch(torch.nn.Module):
    def __init__(self, inner: torch.nn.Module, groups: int):
        super().__init__()
        self.inner, self.groups = inner, groups

    def forward(self, x):
        parts = [self.inner(x[r :: self.groups]) for r in range(self.groups)]
        out = x.new_empty((x.shape[0], parts[0].shape[1]))
        for r, part in enumerate(parts):
            out[r :: self.groups] = part
        return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", required=True)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--ghost", type=int, default=1)
    args = parser.parse_args()
    world = D.world_from_env()
    torch.set_num_threads(1)
    with D.process_group(world):
        train_split, _, _ = datamod.load_data("cifar10", None, True, args.steps * args.batch, seed=0)
        torch.manual_seed(0)
        method = get_method("tathe4")
        model, quantizers = build_model(method, 10)
        for name, module in list(model.named_modules()):
            for child_name, child in list(module.named_children()):
                if isinstance(child, torch.nn.Dropout):
                    setattr(module, child_name, torch.nn.Identity())
        model.double()
        optimizer = make_optimizer(model, get_recipe("paper"))
        forward = GhostBatch(model, args.ghost) if args.ghost > 1 else D.wrap(model, world)
        stepper = Stepper(forward, method, optimizer, quantizers, total_steps=args.steps,
                          options=StepOptions(world=world))
        generator = torch.Generator().manual_seed(1)
        losses, scales_identical, layers = [], True, [layer for _, layer in quant_layers(model)]
        for images, labels in datamod.batches(train_split, args.batch, generator, True, (world.rank, world.size)):
            model.train()
            loss, _ = stepper(images.double(), labels)
            losses.append(float(D.mean_over_ranks(world, loss)))
            scales = torch.stack([symmetric_scale(layer.weight.detach(), 7).reshape(()) for layer in layers])
            if world.distributed:
                every = [torch.zeros_like(scales) for _ in range(world.size)]
                dist.all_gather(every, scales)
                scales_identical &= all(torch.equal(every[0], other) for other in every[1:])
        if world.is_main:
            with open(args.out, "w") as f:
                json.dump({"world_size": world.size, "ghost": args.ghost, "losses": losses,
                           "scales_identical": scales_identical, "layers": len(layers)}, f)


if __name__ == "__main__":
    main()
