"""Test-only methods, registered through $Q4BENCH_PLUGINS so that child processes (q4bench compare, the
parity gate) see them too. Never imported by the suite itself."""

import dataclasses

import torch

from suite import methods
from suite.methods import TATHE4, TatheMethod, register


@dataclasses.dataclass(frozen=True)
class WeightDestroyingMethod(TatheMethod):
    """Deliberately broken: tathe4 whose post-step projection zeroes every conv and linear weight, so the
    network predicts one class whatever it sees."""

    def project_(self, params: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for p in params:
                p.zero_()


BROKEN4 = WeightDestroyingMethod("broken4", "test only: zeroes the weights after every step",
                                 projection=TATHE4.projection)
if BROKEN4.name not in methods.METHODS:
    register(BROKEN4)
