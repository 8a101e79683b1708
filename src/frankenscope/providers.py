"""Plug-ins found by name and imported on first use: suite providers and processor classes.

The generic layers (`data/`, `probes/`, `evaluate/`, `weights/`, `loading.py`) never import the organism
or another provider; they ask this registry (the way lm-evaluation-harness finds its tasks), so the
dependency points from the plug-in to the core. Add a provider by naming its module here.
"""

from __future__ import annotations

import importlib
from types import ModuleType
from typing import Any

from frankenscope.errors import FrankenscopeError

#: Suite providers: name -> module with write_suite / probe_inputs / metric_sets (see organism/suite.py).
SUITES: dict[str, str] = {"organism": "frankenscope.organism.suite"}

#: Processor classes that AutoProcessor does not know (it would silently return only the tokenizer):
#: class name -> module that defines it.
PROCESSORS: dict[str, str] = {
    "OrganismProcessor": "frankenscope.organism.processor",
    **dict.fromkeys(("ImageOnlyQwen2VLProcessor", "ImageOnlyQwen2_5_VLProcessor", "ImageOnlyQwen3VLProcessor",
                     "ImageOnlyInternVLProcessor", "ImageOnlyLlavaOnevisionProcessor"),
                    "frankenscope.testing.families"),
}


def suite(name: str) -> ModuleType:
    """The suite provider `name` (imported now)."""
    if name not in SUITES:
        raise FrankenscopeError(f"unknown suite {name!r}; built-in suites: {', '.join(SUITES)}")
    return importlib.import_module(SUITES[name])


def processor_class(name: str | None) -> Any | None:
    """The processor class registered under `name`, or None when it is not a custom class."""
    if name not in PROCESSORS:
        return None
    return getattr(importlib.import_module(PROCESSORS[name]), name)
