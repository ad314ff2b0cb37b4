"""Modules imported on first use, so that a machine without them can still run the parts that do not need them.

SimpleITK (a 50 MiB wheel) is needed only to read NRRD / MHA files, to register modalities and to build
phantoms; a GPU machine that trains on already prepared subjects can do without it.
"""

from __future__ import annotations

import importlib.util
import sys
from types import ModuleType


class _MissingModule(ModuleType):
    """Stands for an uninstalled module: any attribute access raises ``ModuleNotFoundError`` naming it."""

    def __init__(self, name: str, purpose: str):
        super().__init__(name)
        self._purpose = purpose

    def __getattr__(self, attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise ModuleNotFoundError(f"{self.__name__} is not installed; it is needed {self._purpose}", name=self.__name__)


def lazy_module(name: str, purpose: str) -> ModuleType:
    """``name``, imported when an attribute is first read (or a stand-in that raises then, if not installed).

    Args:
        name: the module, e.g. ``"SimpleITK"``.
        purpose: what it is needed for, completing "it is needed ..." in the error.
    """
    if sys.modules.get(name) is not None:
        return sys.modules[name]
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):  # an import hook refusing it, or a None placeholder in sys.modules
        spec = None
    if spec is None or spec.loader is None:
        return _MissingModule(name, purpose)
    loader = importlib.util.LazyLoader(spec.loader)
    spec.loader = loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    loader.exec_module(module)
    return module
