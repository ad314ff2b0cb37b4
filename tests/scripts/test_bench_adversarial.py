"""scripts/bench_adversarial.py's helpers: arm names and the paired summary over seeds."""

from __future__ import annotations

import bench_adversarial
import pytest


def test_arm_names_combine_flags():
    arm = bench_adversarial.parse_arm("adv=0.01/start500/end900/ns/dec/noema/rms/unseen4/dlr0.001/patch16")
    assert (arm.lambda_adv, arm.ema, arm.start_step, arm.end_step, arm.loss, arm.decoder, arm.rmsprop) == (
        0.01, False, 500, 900, "non_saturating", True, True
    )  # fmt: skip
    assert (arm.unseen_patches, arm.discriminator_lr, arm.patch_size) == (4, 0.001, 16)
    assert bench_adversarial.parse_arm("adv=0.01").unseen_patches is None
    assert bench_adversarial.parse_arm("adv=0.001").ema and bench_adversarial.parse_arm("adv=0.001").loss == "hinge"
    assert bench_adversarial.parse_arm("mse").lambda_adv == 0 and not bench_adversarial.parse_arm("mse").ema
    assert bench_adversarial.parse_arm("mse+ema").ema and bench_adversarial.parse_arm("mse/rms").rmsprop


@pytest.mark.parametrize(
    "name",
    [
        "gan",
        "adv=x",
        "adv=0.1/fast",
        "mse/startx",
        "adv=0.1/end",
        "adv=0.1/unseen0",
        "adv=0.1/dlrx",
        "adv=0.1/dlr0",
        "mse/patch",
        "mse/patch0",
    ],
)
def test_unknown_arms_are_refused(name):
    with pytest.raises(SystemExit, match="unknown arm"):
        bench_adversarial.parse_arm(name)


def test_an_arm_whose_window_ends_before_it_starts_is_refused_before_training():
    with pytest.raises(SystemExit, match="end_step must be > start_step"):
        bench_adversarial.parse_arm("adv=0.1/start500/end100")


def _result(arm: str, seed: int, psnr: float, fid: float) -> dict:
    detail = {"detail_ratio": 0.8, "detail_error": 0.5}
    return {"arm": arm, "seed": seed, "steps": 100, "psnr": psnr, "ssim": 0.9, "fid": fid, "kid": fid / 1000, **detail}


def test_paired_summary_differences_are_per_seed_from_the_reference_arm():
    results = [
        _result("mse", 0, 30.0, 50.0), _result("adv", 0, 29.0, 45.0), _result("mse+ema", 0, 31.0, 48.0),
        _result("mse", 1, 34.0, 60.0), _result("adv", 1, 33.5, 57.0), _result("mse+ema", 1, 34.0, 58.0),
    ]  # fmt: skip
    summary = {entry["arm"]: entry for entry in bench_adversarial.paired_summary(results, "mse")}
    adv = summary["adv"]
    assert adv["seeds"] == [0, 1]
    assert adv["psnr"] == pytest.approx(31.25) and adv["fid"] == pytest.approx(51.0)
    assert adv["dpsnr"] == pytest.approx(-0.75) and adv["dfid"] == pytest.approx(-4.0)
    assert adv["dfid_std"] == pytest.approx(1.4142135, rel=1e-6)
    assert summary["mse"]["dfid"] == 0 and "adv" in bench_adversarial.summary_table(list(summary.values()))
    from_ema = {entry["arm"]: entry for entry in bench_adversarial.paired_summary(results, "mse+ema")}
    assert from_ema["adv"]["dpsnr"] == pytest.approx(-1.25) and from_ema["mse+ema"]["dfid"] == 0


def test_the_default_reference_is_the_shipped_training():
    args = bench_adversarial.parse_arguments(["--train-every", "18"])
    assert args.train_every == 18 and bench_adversarial.parse_arm(args.arms[0]).ema
