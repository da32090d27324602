"""jarvis: a reproducible, workflow-managed reproduction of JARVIS (arXiv 2512.15885).

``import jarvis`` makes trained checkpoints loadable with transformers' Auto classes (``AutoConfig``,
``AutoModelForCausalLM``, ``AutoModelForImageTextToText``, ``AutoProcessor``) through their public ``register``
hooks. Registration needs torch and transformers' modeling code (seconds to import), so it runs when
``transformers`` is first imported -- right away if it already is -- and ``jarvis --help`` stays instant.
``jarvis.model.configuration`` and ``jarvis.model.modeling`` also register themselves when imported.
"""

from __future__ import annotations

import importlib.abc
import importlib.util
import sys
import warnings
from types import ModuleType
from typing import Any

__version__ = "0.1.0"


def _register() -> None:
    if "jarvis.model.configuration" in sys.modules or "jarvis.model.modeling" in sys.modules:
        return  # a jarvis.model module is importing transformers right now; it registers itself when done
    try:
        from jarvis.model import register_auto_classes

        register_auto_classes()
    except Exception as err:  # never break `import transformers` itself; say why the Auto classes lack jarvis
        warnings.warn(f"jarvis: could not register the Auto classes ({type(err).__name__}: {err})", stacklevel=2)


class _RegisterAfterTransformers(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Meta-path finder that wraps the real loader of ``transformers`` and registers once it has executed."""

    def __init__(self) -> None:
        self._loader: Any = None

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> Any:
        if fullname != "transformers":
            return None
        sys.meta_path.remove(self)  # one shot; the real finders answer from here on
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec: Any) -> ModuleType | None:
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        spec = module.__spec__
        if spec is not None:
            spec.loader = self._loader  # so importlib.reload and friends see the real loader
        module.__loader__ = self._loader
        self._loader.exec_module(module)
        _register()


if "transformers" in sys.modules:
    _register()
elif not any(isinstance(f, _RegisterAfterTransformers) for f in sys.meta_path):
    sys.meta_path.insert(0, _RegisterAfterTransformers())
