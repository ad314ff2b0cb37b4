"""The shipped config on one subject: preset with its learning rate, device, patches, data, cache."""

from __future__ import annotations

from pathlib import Path

from mri_nerfstudio.nerf.method_config import mri_mednerf, mri_mednerf_gpu
from mri_nerfstudio.nerf.presets import PRESETS
from mri_nerfstudio.nerf.trainer import preset_optimizers
from mri_nerfstudio.nerf.training_config import CONFIGURATIONS, named_config, shipped_config, this_machines_method
from mri_nerfstudio.prepare import PrepareConfig, default_cache_dir


def test_only_what_is_asked_changes(tmp_path):
    config, method = shipped_config(None, 64), this_machines_method()

    assert config.pipeline.model.preset == method.pipeline.model.preset
    assert config.optimizers == method.optimizers and config.machine == method.machine
    dataparser = config.pipeline.datamanager.dataparser
    assert dataparser.data == Path("default") and dataparser.cache_dir == default_cache_dir()
    assert dataparser.prepare == PrepareConfig(image_size=64) and config.pipeline.datamanager.patch_size == 32
    assert all(config.pipeline is not shipped.config.pipeline for shipped in (mri_mednerf, mri_mednerf_gpu))  # a copy

    small = shipped_config(tmp_path / "s", 16, tmp_path / "cache", preset="mednerf", device="cpu", n_views=8)
    assert small.pipeline.model.preset == "mednerf"
    assert preset_optimizers(small)["fields"]["optimizer"].lr == PRESETS["mednerf"].learning_rate
    assert small.machine.device_type == "cpu" and small.mixed_precision == method.mixed_precision
    assert small.pipeline.datamanager.patch_size == 16  # patches no larger than the views
    assert small.pipeline.datamanager.dataparser.prepare == PrepareConfig(image_size=16, n_views=8)
    assert small.pipeline.datamanager.dataparser.cache_dir == tmp_path / "cache"


def test_named_configurations_set_skipping_and_mixed_precision_on_cuda_only():
    for name, (preset, skip) in CONFIGURATIONS.items():
        for device in ("cpu", "cuda"):
            config = named_config(name, "default", 48, device)
            assert (config.pipeline.model.preset, config.pipeline.model.skip_empty_space) == (preset, skip)
            assert config.machine.device_type == device and config.mixed_precision == (device == "cuda")
