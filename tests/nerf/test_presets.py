"""The model presets: each carries its network, sizes and field learning rate, and says so in --help."""

from __future__ import annotations

from mri_nerfstudio.nerf.presets import PRESETS, PRESETS_HELP


def test_each_preset_carries_its_learning_rate():
    assert PRESETS["mednerf"].learning_rate == 5e-4  # MedNeRF's generator rate for its MLP
    assert PRESETS["cpu"].learning_rate == 2e-2
    assert (PRESETS["mednerf"].backbone, PRESETS["cpu"].backbone) == ("mlp", "grid")


def test_the_help_line_names_every_preset_with_its_rate():
    assert PRESETS_HELP == (
        "mednerf: GRAF / MedNeRF's MLP, 64 samples per ray, codes 128 + 128, field learning rate 0.0005; "
        "cpu: feature grids + a tiny MLP, 48 samples per ray, codes 8 + 8, field learning rate 0.02"
    )
