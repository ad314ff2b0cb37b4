"""The moving average of a network's parameters: warm-up decay, swap in and out, saved as buffers."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.ema import ExponentialMovingAverage


def test_update_follows_the_warmed_up_decay():
    network = nn.Linear(1, 1, bias=False)
    nn.init.zeros_(network.weight)
    ema = ExponentialMovingAverage(network, decay=0.5)
    expected = 0.0
    for n, value in enumerate([1.0, 2.0, 3.0]):
        decay = min(0.5, (1 + n) / (10 + n))
        assert ema.current_decay() == pytest.approx(decay)
        network.weight.data.fill_(value)
        ema.update()
        expected = decay * expected + (1 - decay) * value
    assert float(ema.averages()["weight"]) == pytest.approx(expected)
    assert int(ema.num_updates) == 3


def test_apply_swaps_the_average_in_and_the_trained_weights_back():
    network = nn.Linear(2, 2)
    ema = ExponentialMovingAverage(network, decay=0.9)
    start = {name: p.detach().clone() for name, p in network.named_parameters()}
    with torch.no_grad():
        for p in network.parameters():
            p.add_(1.0)
    ema.update()
    trained = {name: p.detach().clone() for name, p in network.named_parameters()}
    average = {name: a.clone() for name, a in ema.averages().items()}
    weight = network.weight
    ema.apply(True)
    ema.apply(True)  # idempotent
    assert network.weight is weight  # same Parameter: optimizer states stay attached
    for name, p in network.named_parameters():
        torch.testing.assert_close(p.detach(), average[name])
        assert not torch.equal(p.detach(), trained[name]) and not torch.equal(p.detach(), start[name])
    with pytest.raises(MRIInputError, match="apply"):
        ema.update()
    ema.apply(False)
    for name, p in network.named_parameters():
        assert torch.equal(p.detach(), trained[name])


def test_averages_are_saved_and_restored_with_the_owner():
    network = nn.Linear(2, 2)
    ema = ExponentialMovingAverage(network, decay=0.9)
    ema.update()
    state = ema.state_dict()
    assert {"average__weight", "average__bias", "num_updates"} == set(state)
    restored = ExponentialMovingAverage(nn.Linear(2, 2), decay=0.9)
    restored.load_state_dict(state)
    assert int(restored.num_updates) == 1 and torch.equal(restored.averages()["weight"], ema.averages()["weight"])
    with pytest.raises(MRIInputError, match="decay"):
        ExponentialMovingAverage(network, decay=1.0)
