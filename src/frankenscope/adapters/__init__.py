"""Adapter registry keyed by the HF `config.architectures` name.

A family is registered as its `AdapterSpec` and the adapter class that serves it (`VLMAdapter` unless the
family has behaviour that is not data).
"""

from __future__ import annotations

from typing import Any

from frankenscope.adapters.base import AttentionProjections, ParamLocation, VLMAdapter
from frankenscope.adapters.gemma3 import GEMMA3
from frankenscope.adapters.internvl import INTERNVL
from frankenscope.adapters.llava_onevision import LLAVA_ONEVISION
from frankenscope.adapters.qwen2vl import QWEN2_VL, Qwen2VLAdapter
from frankenscope.adapters.qwen3vl import QWEN3_VL, Qwen3VLAdapter
from frankenscope.adapters.smolvlm import SMOLVLM
from frankenscope.adapters.spec import COMPONENTS, AdapterSpec, DecoderLayerSpec, NameRule, get_module
from frankenscope.errors import FrankenscopeError

_ADAPTERS: dict[str, tuple[type[VLMAdapter], AdapterSpec]] = {}


def register(spec: AdapterSpec, cls: type[VLMAdapter] = VLMAdapter) -> None:
    """Serve every architecture of `spec` with `cls(spec)`; an architecture registered twice is an error."""
    for arch in spec.architectures:
        if arch in _ADAPTERS:
            raise FrankenscopeError(f"architecture {arch!r} is already served by adapter spec "
                                    f"{_ADAPTERS[arch][1].name!r}")
        _ADAPTERS[arch] = (cls, spec)


register(QWEN2_VL, Qwen2VLAdapter)
register(QWEN3_VL, Qwen3VLAdapter)
register(LLAVA_ONEVISION)
register(INTERNVL)
register(SMOLVLM)
register(GEMMA3)


def supported_architectures() -> list[str]:
    return sorted(_ADAPTERS)


def architecture_of(model_or_config: Any) -> str:
    """The architecture name: config.architectures[0], else the model's class name."""
    cfg = getattr(model_or_config, "config", model_or_config)
    archs = getattr(cfg, "architectures", None) or []
    if archs:
        return archs[0]
    if hasattr(model_or_config, "config"):
        return type(model_or_config).__name__
    raise FrankenscopeError(f"config {type(cfg).__name__} names no architecture (config.architectures is empty)")


def get_adapter(model_or_config_or_name: Any) -> VLMAdapter:
    """The adapter for a model, a config, or an architecture name; unknown names list the supported ones."""
    arch = model_or_config_or_name if isinstance(model_or_config_or_name, str) else architecture_of(
        model_or_config_or_name)
    if arch not in _ADAPTERS:
        raise FrankenscopeError(
            f"unsupported architecture {arch!r}; supported: {', '.join(supported_architectures())}")
    cls, spec = _ADAPTERS[arch]
    return cls(spec)


__all__ = ["COMPONENTS", "AdapterSpec", "AttentionProjections", "DecoderLayerSpec", "NameRule", "ParamLocation",
           "VLMAdapter", "architecture_of", "get_adapter", "get_module", "register", "supported_architectures"]
