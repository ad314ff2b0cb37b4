"""mri-report: a trained run in, readable report.json / report.md / figures out; clear errors for bad configs."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mri_nerfstudio.cli.report import main as report_main
from mri_nerfstudio.nerf.session import TrainingSession

AGGREGATE_KEYS = {
    "held_out_views", "psnr", "psnr_std", "ssim", "ssim_std", "fid", "kid", "kid_std",
    "volume_psnr", "volume_psnr_std", "volume_ssim", "volume_ssim_std",
}  # fmt: skip


@pytest.fixture(scope="module")
def trained_run(tiny_method_config, phantom_subject_dir, tmp_path_factory) -> tuple[Path, TrainingSession]:
    """config.yml and checkpoint of the stock method (VanillaPipeline) after 30 steps: 8 views of 24 px, 4 held out
    (view 7 for val, 1, 3, 5 for test)."""
    config = tiny_method_config(phantom_subject_dir, tmp_path_factory.mktemp("cache"), n_views=8, step_deg=45.0)
    config.pipeline.datamanager.dataparser.train_every = 2
    session = TrainingSession(config, tmp_path_factory.mktemp("outputs"))
    for _ in range(30):
        session.step()
    session.trainer.config.save_config()
    session.trainer.save_checkpoint(session.step_count)
    return session.trainer.config.get_base_dir() / "config.yml", session


def test_report_writes_json_markdown_and_figure(trained_run, tmp_path, capsys):
    config_path, session = trained_run
    out = tmp_path / "report"
    report_main(["--load-config", str(config_path), "--out", str(out), "--figure-views", "3"])

    report = json.loads((out / "report.json").read_text())
    aggregate = report["aggregate"]
    assert AGGREGATE_KEYS <= set(aggregate) and aggregate["held_out_views"] == 3
    assert report["step"] == 30 and len(report["subjects"]) == 1
    subject = report["subjects"][0]
    assert subject["name"] == "BraTS2021_00000" and subject["held_out_views"] == 3
    # One subject: its scores are the aggregate. The loaded checkpoint scores what the session scored.
    for key in ("psnr", "ssim", "fid", "kid", "volume_psnr", "volume_ssim"):
        assert subject[key] == pytest.approx(aggregate[key], rel=1e-9), key
    held_out = session.evaluate()
    assert aggregate["psnr"] == pytest.approx(held_out["psnr"], abs=1e-3)
    assert aggregate["ssim"] == pytest.approx(held_out["ssim"], abs=1e-4)
    assert aggregate["fid"] >= 0.0 and -1.0 <= aggregate["volume_ssim"] <= 1.0

    markdown = (out / "report.md").read_text()
    for reference in ("25.01 ± 1.17", "0.879 ± 0.070", "160.12", "0.160 ± 0.003", f"{aggregate['psnr']:.2f}"):
        assert reference in markdown, reference
    assert "| BraTS2021_00000 | 3 |" in markdown and "![figure_BraTS2021_00000](figure_BraTS2021_00000.png)" in markdown
    figure = np.asarray(Image.open(out / report["figures"][0]).convert("L"))
    assert figure.shape[0] > 400 and figure.shape[1] > 200 and figure.std() > 10  # drawn, not blank
    assert not list(out.glob(".*.tmp"))
    assert "160.12" in capsys.readouterr().out


def test_report_rejects_bad_configs(trained_run, tmp_path, capsys):
    config_path, session = trained_run

    def error_of(path: Path) -> str:
        with pytest.raises(SystemExit) as exit_info:
            report_main(["--load-config", str(path), "--out", str(tmp_path / "out")])
        assert exit_info.value.code == 2
        return capsys.readouterr().err

    assert "no such config file" in error_of(tmp_path / "missing.yml")
    (tmp_path / "broken.yml").write_text("pipeline: [unclosed\n")
    assert "not a config.yml written by ns-train" in error_of(tmp_path / "broken.yml")
    (tmp_path / "dict.yml").write_text("method_name: mri-mednerf\n")
    assert "holds a dict, expected the TrainerConfig" in error_of(tmp_path / "dict.yml")
    untrained = copy.deepcopy(session.trainer.config)
    untrained.timestamp = "never-trained"
    untrained.save_config()
    assert "no checkpoint in" in error_of(untrained.get_base_dir() / "config.yml")
    assert not (tmp_path / "out").exists()
