"""Modules imported on first use: the real module when installed, a clear error when not."""

from __future__ import annotations

import subprocess
import sys

import pytest

from mri_nerfstudio.lazy_import import lazy_module


def test_installed_module_loads_on_first_attribute():
    module = lazy_module("colorsys", "for this test")
    assert module.rgb_to_hsv(1.0, 0.0, 0.0) == (0.0, 1.0, 1.0)


def test_missing_module_names_itself_and_its_purpose_on_use():
    module = lazy_module("mri_nerfstudio_no_such_module", "to test lazy imports")
    with pytest.raises(ModuleNotFoundError, match="no_such_module is not installed; it is needed to test lazy"):
        module.anything


def test_the_method_imports_without_loading_simpleitk():
    """A GPU machine without SimpleITK can train on prepared subjects (see scripts/prepare_device_wheels.py)."""
    code = (
        "import sys, mri_nerfstudio.nerf.method_config\n"
        "module = sys.modules.get('SimpleITK')\n"
        "print(module is None or type(module).__name__ == '_LazyModule')"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.stdout.strip().endswith("True"), result.stderr[-2000:]
