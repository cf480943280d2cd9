"""``cascade predict`` under ``torchrun``: the cases split over the ranks, one report on rank 0.

``torchrun --nproc_per_node N -m cascade.cli predict IN OUT ...`` (or ``--nnodes``/rendezvous
options for several machines) starts N processes; each reads the rank torchrun sets, takes every
N-th case, and runs on its own device (``cuda:LOCAL_RANK`` where CUDA is available, else the CPU
with its share of the cores). The ranks meet twice over a ``gloo`` process group: after every rank
has checked the outputs of the whole folder (so no rank writes before all have checked), and at
the end, when rank 0 gathers the per-case rows, writes ``predictions.csv`` and prints the summary.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch

__all__ = ["Ranks", "ranks_from_env"]


@dataclass(frozen=True)
class Ranks:
    """This process's place among the ranks of a ``torchrun`` launch (rank 0 of 1 without one)."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def shard(self, items: list) -> list:
        """Every ``world``-th item, starting at ``rank``: each item on exactly one rank."""
        return items[self.rank :: self.world]

    def device(self) -> str:
        """The device name of this rank: its own GPU, or the CPU."""
        return f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"

    def start(self) -> None:
        """Join the ranks (gloo: the messages are small Python objects) and share the CPU cores."""
        if not torch.distributed.is_initialized():
            torch.distributed.init_process_group("gloo")
        if not torch.cuda.is_available():
            local_world = int(os.environ.get("LOCAL_WORLD_SIZE", self.world))
            torch.set_num_threads(max(1, (os.cpu_count() or 1) // local_world))

    def barrier(self) -> None:
        torch.distributed.barrier()

    def gather(self, rows: list) -> list:
        """Every rank's rows, concatenated, on every rank."""
        gathered: list = [None] * self.world
        torch.distributed.all_gather_object(gathered, rows)
        return [row for part in gathered for row in part]

    def stop(self) -> None:
        torch.distributed.destroy_process_group()


def ranks_from_env() -> Ranks:
    """The ranks ``torchrun`` describes in ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``."""
    return Ranks(
        int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)), int(os.environ.get("LOCAL_RANK", 0))
    )
