"""Training runs that resume exactly: the random stream of each epoch depends on the seed and the epoch only.

MONAI seeds a run once (``set_determinism`` in ``initialize``), so the patches, augmentations and
batch order of epoch ``e`` depend on everything drawn before it. A run resumed from a checkpoint
of epoch ``e - 1`` (MONAI's ``CheckpointLoader`` restores the network, optimiser, schedule and
the trainer's epoch and iteration, not the random generators) then draws different patches from
then on than the run it continues would have. :class:`SeedEachEpoch` reseeds at the start of
every epoch from ``(seed, epoch)`` (torch, numpy, Python, the random transforms and the batch
sampler's own generator: on a resume ignite creates the loader's iterator before the first epoch
starts, which draws from torch's global generator at another moment than a running epoch does),
so an interrupted and resumed run follows the same random stream as an uninterrupted one and ends
with the same weights (on a deterministic device; tested on the CPU). MONAI has no such handler.

Under ``torch.distributed`` each rank adds its rank to the seed, as the bundles'
``multi_gpu_train.json`` does for ``set_determinism``, so ranks draw different patches.

Exact with ``num_workers`` 0 (the CPU recipes) and with loader workers that are started anew each
epoch; persistent loader workers keep their own generators across epochs, so after a resume their
augmentations differ (the run is still valid, not identical).
"""

from __future__ import annotations

import os
import random
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.transforms import Randomizable

__all__ = ["epoch_seed", "SeedEachEpoch", "latest_epoch_checkpoint"]

# the name MONAI's CheckpointSaver gives with save_interval
EPOCH_CHECKPOINT = re.compile(r"checkpoint_epoch=(\d+)\.pt")


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of one epoch (1-based, ignite's count) of a run seeded with ``seed``: a 32-bit integer."""
    return (int(seed) * 1_000_003 + int(epoch)) % 2**32


class SeedEachEpoch:
    """Ignite handler: at each epoch's start, seed torch, numpy, Python and the training transforms.

    Args:
        seed: the run's seed (the bundle's ``seed``).
        transform: the training preprocessing (a MONAI ``Compose`` or any ``Randomizable``) whose
            random transforms keep generators of their own.
        generators: torch generators to reseed too (the training sampler's).
    """

    def __init__(
        self, seed: int, transform: Randomizable | None = None, generators: Sequence[torch.Generator] = ()
    ) -> None:
        self.seed = int(seed)
        self.transform = transform
        self.generators = list(generators)

    def attach(self, engine: Engine) -> None:
        """Reseed at every ``EPOCH_STARTED`` of ``engine`` (before its first batch is drawn)."""
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        rank = torch.distributed.get_rank() if torch.distributed.is_initialized() else 0
        seed = epoch_seed(self.seed + rank, engine.state.epoch)
        torch.manual_seed(seed)
        np.random.seed(seed)
        random.seed(seed)
        if isinstance(self.transform, Randomizable):
            self.transform.set_random_state(seed=seed)
        for generator in self.generators:
            generator.manual_seed(seed)


def latest_epoch_checkpoint(models_dir: str | os.PathLike) -> Path | None:
    """The checkpoint of the latest finished epoch in a training run's ``models`` folder, or None.

    The bundles' ``CheckpointSaver`` writes ``checkpoint_epoch=<e>.pt`` (network, optimiser,
    schedule and trainer state) after every epoch, atomically; passing it as ``resume_ckpt``
    continues the run after epoch ``e``.
    """
    folder = Path(models_dir)
    found = [
        (int(m.group(1)), p) for p in folder.glob("checkpoint_epoch=*.pt") if (m := EPOCH_CHECKPOINT.fullmatch(p.name))
    ]
    return max(found)[1] if found else None
