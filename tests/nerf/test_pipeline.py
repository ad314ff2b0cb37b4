"""MRIPipeline: ns-eval's held-out scores plus FID, KID and volume fidelity; the adversarial loss and the EMA."""

from __future__ import annotations

import math
import random

import pytest
import torch

from nerfstudio.pipelines.base_pipeline import VanillaPipeline

from mri_nerfstudio.errors import MRIInputError
from mri_nerfstudio.nerf.pipeline import MRIPipeline, MRIPipelineConfig
from mri_nerfstudio.nerf.session import TrainingSession
from mri_nerfstudio.nerf.trained_run import load_mednerf_run

IMAGE_KEYS = {"psnr", "psnr_std", "ssim", "ssim_std", "fps", "fps_std"}
ADDED_KEYS = {"fid", "kid", "kid_std", "volume_psnr", "volume_psnr_std", "volume_ssim", "volume_ssim_std"}


@pytest.fixture(scope="module")
def session(tiny_method_config, phantom_subject_dir, tmp_path_factory) -> TrainingSession:
    """The CPU method with MRIPipelineConfig on one tiny phantom: 8 views of 24 px, 0, 2, 4, 6 for training,
    7 for val (7 % 5 == 2), 1, 3, 5 for test (the eval dataset)."""
    config = tiny_method_config(phantom_subject_dir, tmp_path_factory.mktemp("cache"), n_views=8, step_deg=45.0)
    config.pipeline = MRIPipelineConfig(datamanager=config.pipeline.datamanager, model=config.pipeline.model)
    config.pipeline.datamanager.dataparser.train_every = 2
    return TrainingSession(config, tmp_path_factory.mktemp("outputs"))


def test_ns_eval_scores_gain_fid_kid_and_volume_fidelity(session):
    pipeline = session.pipeline
    assert isinstance(pipeline, MRIPipeline)
    pipeline.config.image_set_metrics = False  # the baseline needs only the volume scores
    untrained = pipeline.get_average_eval_image_metrics(get_std=True)
    pipeline.config.image_set_metrics = True
    assert "fid" not in untrained and "volume_psnr" in untrained
    for _ in range(60):
        session.step()
    scores = pipeline.get_average_eval_image_metrics(get_std=True)

    assert IMAGE_KEYS | ADDED_KEYS <= set(scores), sorted(scores)
    assert all(math.isfinite(value) for value in scores.values()), scores
    split = {"num_train_views": 4, "num_val_views": 1, "num_test_views": 3, "num_mirror_views_excluded": 0}
    assert {key: scores[key] for key in split} == split
    assert scores["fid"] >= 0.0 and scores["kid_std"] >= 0.0
    # One subject: the volume std over subjects is 0. 3 test views: every KID subset holds them all.
    assert scores["volume_psnr_std"] == 0.0 and scores["kid_std"] < 1e-9
    assert -1.0 <= scores["volume_ssim"] <= 1.0
    # Training on 4 views must also bring the field's volume towards the input volume (measured: untrained
    # 8.3 dB / 0.17, after 60 steps 9.3 dB / 0.28; the density keeps converging for hundreds of steps).
    assert scores["volume_psnr"] > untrained["volume_psnr"] + 0.5, (untrained, scores)
    assert scores["volume_ssim"] > untrained["volume_ssim"] + 0.05, (untrained, scores)
    assert scores["psnr"] > untrained["psnr"] + 5.0


def test_a_run_saved_before_the_val_split_loads_and_scores_its_test_views(trained_phantom_run, tmp_path):
    """A config.yml without val_every / val_offset (written before they existed) loads as ns-eval and
    mri-export load it: yaml restores the dataclass's saved fields, the class gives the defaults."""
    saved = trained_phantom_run.read_text()
    assert "val_every: 5" in saved and "val_offset: 2" in saved
    old_lines = [line for line in saved.splitlines() if line.strip().split(":")[0] not in ("val_every", "val_offset")]
    old_config = tmp_path / "config.yml"
    old_config.write_text("\n".join(old_lines) + "\n")

    run = load_mednerf_run(old_config)  # eval_setup(test_mode="test"), as ns-eval
    dataparser = run.pipeline.datamanager.dataparser
    assert "val_every" not in vars(dataparser.config) and dataparser.config.val_every == 5
    run.pipeline.config.image_set_metrics = False  # FID / KID are tested above; this is about loading
    scores = run.pipeline.get_average_eval_image_metrics(get_std=True)
    assert len(run.pipeline.datamanager.eval_dataset) == 43
    assert scores["num_test_views"] == 43 and scores["num_val_views"] == 14 and scores["num_train_views"] == 15
    assert scores["num_mirror_views_excluded"] == 0 and 10.0 < scores["psnr"] < 60.0


def _adversarial_session(make_config, subject_dir, root, lambda_adv: float = 1e-2) -> TrainingSession:
    """The tiny CPU method with the adversarial loss on (R1 every step), 8 views of 24 px."""
    config = make_config(subject_dir, root / "cache", n_views=8, step_deg=45.0)
    config.pipeline.datamanager.dataparser.train_every = 2
    config.pipeline.adversarial.lambda_adv = lambda_adv
    config.pipeline.adversarial.r1_interval = 1
    torch.manual_seed(0)
    return TrainingSession(config, root / "outputs")


@pytest.fixture(scope="module")
def adversarial_session(tiny_method_config, phantom_subject_dir, tmp_path_factory) -> TrainingSession:
    return _adversarial_session(tiny_method_config, phantom_subject_dir, tmp_path_factory.mktemp("adversarial"))


def _changes(before: dict[str, torch.Tensor], module: torch.nn.Module) -> bool:
    return any(not torch.equal(before[name], p.detach()) for name, p in module.named_parameters())


def test_adversarial_terms_give_d_and_g_only_their_own_gradients(adversarial_session):
    pipeline = adversarial_session.pipeline
    generator = [p for p in pipeline.model.parameters() if p.requires_grad]
    discriminator = list(pipeline.adversarial.discriminator.parameters())
    _, loss_dict, _ = pipeline.get_train_loss_dict(step=0)
    assert {"rgb_loss", "discriminator_loss", "r1_penalty", "generator_adversarial_loss"} <= set(loss_dict)
    for name, term in loss_dict.items():
        to_generator = torch.autograd.grad(term, generator, retain_graph=True, allow_unused=True)
        to_discriminator = torch.autograd.grad(term, discriminator, retain_graph=True, allow_unused=True)
        reaches_generator = any(g is not None and bool(g.abs().sum() > 0) for g in to_generator)
        reaches_discriminator = any(g is not None and bool(g.abs().sum() > 0) for g in to_discriminator)
        is_discriminator_term = name in ("discriminator_loss", "r1_penalty")
        assert reaches_discriminator == is_discriminator_term, name
        assert reaches_generator == (not is_discriminator_term), name


def test_adversarial_step_moves_both_sides_with_their_own_optimizers(adversarial_session):
    pipeline = adversarial_session.pipeline
    optimizers = adversarial_session.trainer.optimizers.optimizers
    assert isinstance(optimizers["discriminator"], torch.optim.RMSprop)
    assert optimizers["discriminator"].param_groups[0]["lr"] == 1e-4
    model_before = {name: p.detach().clone() for name, p in pipeline.model.named_parameters()}
    discriminator_before = {name: p.detach().clone() for name, p in pipeline.adversarial.named_parameters()}
    updates = int(pipeline.generator_ema.num_updates)
    adversarial_session.step()
    assert _changes(model_before, pipeline.model) and _changes(discriminator_before, pipeline.adversarial)
    assert int(pipeline.generator_ema.num_updates) == updates + 1


def test_outside_the_start_end_window_a_step_is_mse_only(adversarial_session):
    pipeline = adversarial_session.pipeline
    pipeline.config.adversarial.start_step, pipeline.config.adversarial.end_step = 10, 20
    try:
        losses = {step: pipeline.get_train_loss_dict(step=step)[1] for step in (9, 10, 19, 20)}
    finally:
        pipeline.config.adversarial.start_step, pipeline.config.adversarial.end_step = 0, None
    for step in (9, 20):
        assert "discriminator_loss" not in losses[step] and "rgb_loss" in losses[step], step
    for step in (10, 19):
        assert {"discriminator_loss", "generator_adversarial_loss"} <= set(losses[step]), step


def test_with_a_start_step_training_is_mse_training_until_it(tiny_method_config, phantom_subject_dir, tmp_path):
    """Same seed, same batches: the discriminator's initialisation does not shift the random stream."""

    def weights_after_three_steps(lambda_adv: float) -> dict[str, torch.Tensor]:
        config = tiny_method_config(phantom_subject_dir, tmp_path / "cache", n_views=8, step_deg=45.0)
        config.pipeline.adversarial.lambda_adv = lambda_adv
        config.pipeline.adversarial.start_step = 3
        config.pipeline.ema_decay = 0.0
        random.seed(0)  # nerfstudio's CacheDataloader orders the images with Python's random
        torch.manual_seed(0)
        session = TrainingSession(config, tmp_path / f"outputs_{lambda_adv}")
        for _ in range(3):
            session.step()
        return {name: p.detach().clone() for name, p in session.pipeline.model.named_parameters()}

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # see test_lambda_adv_zero_is_nerfstudio_training_bit_for_bit
    try:
        mse, adversarial = weights_after_three_steps(0.0), weights_after_three_steps(1e-2)
    finally:
        torch.set_num_threads(threads)
    assert mse.keys() == adversarial.keys()
    assert all(torch.equal(mse[name], adversarial[name]) for name in mse)


def test_eval_mode_renders_with_the_ema_weights(adversarial_session):
    pipeline, session = adversarial_session.pipeline, adversarial_session
    for _ in range(3):
        session.step()
    averages = {name: a.clone() for name, a in pipeline.generator_ema.averages().items()}
    trained = {name: p.detach().clone() for name, p in pipeline.model.named_parameters()}
    camera = pipeline.datamanager.eval_dataset.cameras[0:1]
    pipeline.eval()
    assert all(torch.equal(p.detach(), averages[name]) for name, p in pipeline.model.named_parameters())
    assert _changes(trained, pipeline.model)
    with torch.no_grad():
        ema_render = pipeline.model.get_outputs_for_camera(camera)["rgb"]
    pipeline.train()
    for name, p in pipeline.model.named_parameters():
        assert torch.equal(p.detach(), trained[name])
    with torch.no_grad():
        trained_render = pipeline.model.get_outputs_for_camera(camera)["rgb"]
    assert not torch.equal(ema_render, trained_render)
    assert set(session.evaluate([0, 1])) == {"psnr", "psnr_std", "ssim", "ssim_std"}  # through pipeline.eval()
    for name, p in pipeline.model.named_parameters():
        assert torch.equal(p.detach(), trained[name])


def test_lambda_adv_zero_is_nerfstudio_training_bit_for_bit(tiny_method_config, phantom_subject_dir, tmp_path):
    def trained_weights(pipeline_class) -> tuple[TrainingSession, dict[str, torch.Tensor]]:
        config = tiny_method_config(phantom_subject_dir, tmp_path / "cache")
        config.pipeline._target = pipeline_class
        torch.manual_seed(0)
        random.seed(0)  # nerfstudio's CacheDataloader orders the images with Python's random
        session = TrainingSession(config, tmp_path / pipeline_class.__name__)
        for _ in range(3):
            session.step()
        return session, {name: p.detach().clone() for name, p in session.pipeline.model.named_parameters()}

    # Prepare the subject first, so that both runs start from the cache with the same random state.
    tiny_method_config(phantom_subject_dir, tmp_path / "cache").pipeline.datamanager.dataparser.setup().subjects
    # One thread: the grids' multi-threaded backward on CPU sums in a varying order (1e-7 apart run to run).
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        ours, our_weights = trained_weights(MRIPipeline)
        _, vanilla_weights = trained_weights(VanillaPipeline)
    finally:
        torch.set_num_threads(threads)
    assert ours.pipeline.adversarial is None
    assert ours.pipeline.generator_ema is not None  # on by default; it only reads the weights
    assert set(ours.trainer.optimizers.optimizers) == {"fields", "codes"}
    assert our_weights.keys() == vanilla_weights.keys()
    assert all(torch.equal(our_weights[name], vanilla_weights[name]) for name in our_weights)


@pytest.mark.parametrize("decay", [-0.5, 1.0])
def test_ema_decay_out_of_range_is_a_clear_error(tiny_method_config, phantom_subject_dir, tmp_path, decay):
    config = tiny_method_config(phantom_subject_dir, tmp_path / "cache")
    config.pipeline.ema_decay = decay
    with pytest.raises(MRIInputError, match=r"ema_decay must be 0 \(no EMA\) or in \(0, 1\)"):
        TrainingSession(config, tmp_path / "outputs")


def test_adversarial_loss_needs_patches(tiny_method_config, phantom_subject_dir, tmp_path):
    config = tiny_method_config(phantom_subject_dir, tmp_path / "cache")
    config.pipeline.adversarial.lambda_adv = 1e-2
    config.pipeline.datamanager.patch_size = 4
    with pytest.raises(MRIInputError, match="at least 8 x 8"):
        TrainingSession(config, tmp_path / "outputs")
