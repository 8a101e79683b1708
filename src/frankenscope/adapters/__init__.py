"""Adapter registry keyed by the HF `config.architectures` name."""

from __future__ import annotations

from typing import Any

from frankenscope.adapters.base import COMPONENTS, AttentionProjections, ParamLocation, VLMAdapter
from frankenscope.adapters.qwen2vl import Qwen2VLAdapter
from frankenscope.errors import FrankenscopeError

_ADAPTERS: dict[str, type[VLMAdapter]] = {arch: Qwen2VLAdapter for arch in Qwen2VLAdapter.architectures}


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
    cls = _ADAPTERS.get(arch)
    if cls is None:
        raise FrankenscopeError(
            f"unsupported architecture {arch!r}; supported: {', '.join(supported_architectures())}")
    return cls()


__all__ = ["COMPONENTS", "AttentionProjections", "ParamLocation", "VLMAdapter", "get_adapter",
           "supported_architectures", "architecture_of"]
