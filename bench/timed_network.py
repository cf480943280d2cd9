"""A network wrapper for the benchmarks: counts the sliding windows it runs on and the seconds inside it."""

from __future__ import annotations

import time

import torch


def synchronize(device: torch.device) -> None:
    """Wait for queued CUDA work, so wall-clock times include it (no-op on a CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class TimedNetwork(torch.nn.Module):
    """Wraps a network; ``windows`` counts the patches it was called on, ``seconds`` the time inside it.

    On CUDA each call synchronizes before and after, so ``seconds`` is the forward time of the
    windows themselves and everything else an inferer spends is overhead.
    """

    def __init__(self, network: torch.nn.Module) -> None:
        super().__init__()
        self.network = network
        self.reset()

    def reset(self) -> None:
        self.windows = 0
        self.seconds = 0.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        synchronize(x.device)
        start = time.perf_counter()
        y = self.network(x)
        synchronize(x.device)
        self.seconds += time.perf_counter() - start
        self.windows += x.shape[0]
        return y
