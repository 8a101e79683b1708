"""Load a model + processor + adapter from an HF folder or hub id."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from frankenscope.adapters import VLMAdapter, architecture_of, get_adapter
from frankenscope.errors import FrankenscopeError

#: Processor classes that AutoProcessor does not know (it would silently return only the tokenizer).
CUSTOM_PROCESSORS: dict[str, str] = {"OrganismProcessor": "frankenscope.organism.processor"}

DTYPES = {"float32": torch.float32, "fp32": torch.float32, "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
          "float16": torch.float16, "fp16": torch.float16, "float64": torch.float64, "auto": "auto"}


@dataclass
class Loaded:
    model: Any
    processor: Any
    adapter: VLMAdapter
    source: str


def resolve_dtype(dtype: str | torch.dtype) -> Any:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise FrankenscopeError(f"unknown dtype {dtype!r}; choose one of {sorted(DTYPES)}")
    return DTYPES[dtype]


def load_processor(path: str | Path) -> Any:
    """The processor saved with a model; custom (unregistered) classes are loaded explicitly.

    `AutoProcessor` returns a bare tokenizer for an unregistered processor class; we read
    `processor_config.json` first and load known custom classes ourselves.
    """
    cfg_file = Path(path) / "processor_config.json"
    if cfg_file.is_file():
        try:
            cls_name = json.loads(cfg_file.read_text()).get("processor_class")
        except json.JSONDecodeError as e:
            raise FrankenscopeError(f"{cfg_file}: not valid JSON ({e})") from e
        if cls_name in CUSTOM_PROCESSORS:
            import importlib

            cls = getattr(importlib.import_module(CUSTOM_PROCESSORS[cls_name]), cls_name)
            return cls.from_pretrained(str(path))
    proc = AutoProcessor.from_pretrained(str(path))
    if not hasattr(proc, "image_processor"):
        raise FrankenscopeError(
            f"{path}: AutoProcessor returned {type(proc).__name__}, which cannot process images; "
            f"the folder needs a processor_config.json / preprocessor_config.json for a VLM processor")
    return proc


def load_model(path: str | Path, *, dtype: str | torch.dtype = "float32", device: str | None = None,
               device_map: str | dict | None = None, attn_implementation: str = "sdpa") -> Loaded:
    """Load model, processor and adapter from an HF folder or hub id.

    attn_implementation: "eager" for analyses that need attention weights, "sdpa" otherwise.
    device_map (e.g. "auto") wins over device; with neither, the model stays on the CPU.
    """
    src = str(path)
    local = Path(src)
    if local.exists() and not (local / "config.json").is_file():
        raise FrankenscopeError(f"{local}: not a model folder (no config.json)")
    config = AutoConfig.from_pretrained(src)
    adapter = get_adapter(architecture_of(config))  # fails early, naming the architecture
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype), "attn_implementation": attn_implementation}
    if device_map is not None:
        kwargs["device_map"] = device_map
    model = AutoModelForImageTextToText.from_pretrained(src, **kwargs)
    if device_map is None and device is not None:
        model = model.to(device)
    model.eval()
    processor = load_processor(src)
    return Loaded(model=model, processor=processor, adapter=adapter, source=src)
