"""Exponential moving average of a network's parameters (GRAF / MedNeRF evaluate the EMA generator).

After each optimizer step, ``average <- d * average + (1 - d) * parameter`` with
``d = min(decay, (1 + n) / (10 + n))`` at the n-th update: the usual warm-up, so that on a short run
the average does not keep the random initialisation (with a fixed d = 0.999 it would still weigh
37 % after 1,000 steps). The averages are buffers, so they are saved in and restored from checkpoints
with the module that owns this one.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mri_nerfstudio.errors import MRIInputError


class ExponentialMovingAverage(nn.Module):
    """The moving average of ``network``'s parameters, and a way to put it in their place.

    Args:
        network: whose parameters are averaged (kept by reference, not registered as a submodule).
        decay: the largest per-update decay d, in (0, 1) (MedNeRF: 0.999).
    """

    def __init__(self, network: nn.Module, decay: float):
        super().__init__()
        if not 0 < decay < 1:
            raise MRIInputError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        # A plain list: registering ``network`` would save its weights twice in the owner's state dict.
        self._tracked: list[tuple[str, nn.Parameter]] = list(network.named_parameters())
        for name, parameter in self._tracked:
            self.register_buffer(self._buffer_name(name), parameter.detach().clone())
        self.register_buffer("num_updates", torch.zeros((), dtype=torch.long))
        self.applied = False

    @staticmethod
    def _buffer_name(parameter_name: str) -> str:
        return "average__" + parameter_name.replace(".", "__")

    def averages(self) -> dict[str, Tensor]:
        """Parameter name -> its moving average (the buffers themselves)."""
        return {name: getattr(self, self._buffer_name(name)) for name, _ in self._tracked}

    def current_decay(self) -> float:
        """d of the next update: ``min(decay, (1 + n) / (10 + n))``."""
        n = int(self.num_updates)
        return min(self.decay, (1 + n) / (10 + n))

    @torch.no_grad()
    def update(self) -> None:
        """One EMA step from the network's current parameters (call after the optimizer step)."""
        if self.applied:
            raise MRIInputError("EMA: update() while the averages are applied; call apply(False) first")
        decay = self.current_decay()
        for (_, parameter), average in zip(self._tracked, self.averages().values()):
            average.lerp_(parameter.detach(), 1 - decay)
        self.num_updates += 1

    @torch.no_grad()
    def restart(self) -> None:
        """Start the average again at the network's current parameters (n = 0); not while applied."""
        if self.applied:
            raise MRIInputError("EMA: restart() while the averages are applied; call apply(False) first")
        for (_, parameter), average in zip(self._tracked, self.averages().values()):
            average.copy_(parameter.detach())
        self.num_updates.zero_()

    @torch.no_grad()
    def apply(self, use_average: bool) -> None:
        """Put the averages in the network's parameters (True), or the trained values back (False).

        The values are swapped in place, so the parameters (and optimizer states keyed by them) stay the
        same objects; calling it twice with the same flag does nothing.
        """
        if use_average == self.applied:
            return
        for (_, parameter), average in zip(self._tracked, self.averages().values()):
            trained = parameter.detach().clone()
            parameter.copy_(average)
            average.copy_(trained)
        self.applied = use_average
