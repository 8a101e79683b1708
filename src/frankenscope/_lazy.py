"""Lazy package exports (PEP 562): `import frankenscope.evaluate` costs nothing until a name is used.

A package lists `name -> module` and gets `__getattr__` / `__dir__` that import the module on first
access. This keeps `frankenscope --help` and light submodules (prompts, datasets) free of torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, exports: dict[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """(__getattr__, __dir__) for `package` exporting each name from its module (absolute module path)."""

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(module), name)

    def __dir__() -> list[str]:
        return sorted(exports)

    return __getattr__, __dir__
