"""The shipped config on one subject: preset with its learning rate, device, patches, data, cache."""

from __future__ import annotations

from pathlib import Path

from mri_nerfstudio.nerf.method_config import FIELD_LEARNING_RATE, mri_mednerf
from mri_nerfstudio.nerf.training_config import CONFIGURATIONS, named_config, shipped_config
from mri_nerfstudio.prepare import PrepareConfig, default_cache_dir


def test_only_what_is_asked_changes(tmp_path):
    config = shipped_config(None, 64)

    assert config.pipeline.model.preset == mri_mednerf.config.pipeline.model.preset
    assert config.optimizers == mri_mednerf.config.optimizers and config.machine == mri_mednerf.config.machine
    dataparser = config.pipeline.datamanager.dataparser
    assert dataparser.data == Path("default") and dataparser.cache_dir == default_cache_dir()
    assert dataparser.prepare == PrepareConfig(image_size=64) and config.pipeline.datamanager.patch_size == 32
    assert config is not mri_mednerf.config and config.pipeline is not mri_mednerf.config.pipeline

    small = shipped_config(tmp_path / "s", 16, tmp_path / "cache", preset="mednerf", device="cpu", n_views=8)
    assert small.pipeline.model.preset == "mednerf"
    assert small.optimizers["fields"]["optimizer"].lr == FIELD_LEARNING_RATE["mednerf"]
    assert small.machine.device_type == "cpu" and small.mixed_precision == mri_mednerf.config.mixed_precision
    assert small.pipeline.datamanager.patch_size == 16  # patches no larger than the views
    assert small.pipeline.datamanager.dataparser.prepare == PrepareConfig(image_size=16, n_views=8)
    assert small.pipeline.datamanager.dataparser.cache_dir == tmp_path / "cache"


def test_named_configurations_set_skipping_and_mixed_precision_on_cuda_only():
    for name, (preset, skip) in CONFIGURATIONS.items():
        for device in ("cpu", "cuda"):
            config = named_config(name, "default", 48, device)
            assert (config.pipeline.model.preset, config.pipeline.model.skip_empty_space) == (preset, skip)
            assert config.machine.device_type == device and config.mixed_precision == (device == "cuda")
