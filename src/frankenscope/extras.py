"""Optional extras (`pip install 'frankenscope[ray]'`, `'frankenscope[vllm]'`): imported only where used.

`require_extra` is the one way code reaches an optional dependency, so a missing one always fails the same
way: a FrankenscopeError naming what needed it and the install command.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from frankenscope.errors import FrankenscopeError

#: extra name -> the module it provides (what `require_extra` imports).
EXTRAS = {"ray": "ray", "vllm": "vllm"}


def install_hint(extra: str) -> str:
    """The pip command that installs an extra."""
    return f"pip install 'frankenscope[{extra}]'"


def require_extra(extra: str, purpose: str) -> ModuleType:
    """Import the module of `extra` (EXTRAS) or raise FrankenscopeError naming `purpose` and the install command.

    Only an ImportError of the extra itself is turned into the error; anything else it raises propagates.
    """
    if extra not in EXTRAS:
        raise FrankenscopeError(f"unknown extra {extra!r}; known: {', '.join(EXTRAS)}")
    try:
        return importlib.import_module(EXTRAS[extra])
    except ImportError as e:
        raise FrankenscopeError(f"{purpose} needs the optional dependency {EXTRAS[extra]!r}, which is not "
                                f"installed ({e}); install it with: {install_hint(extra)}") from e
