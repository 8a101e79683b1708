"""Load a model + processor + adapter from an HF folder or hub id."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForImageTextToText, AutoProcessor

from frankenscope.adapters import VLMAdapter, architecture_of, get_adapter
from frankenscope.errors import FrankenscopeError
from frankenscope.providers import processor_class

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
    `processor_config.json` first and load the classes registered in `frankenscope.providers` ourselves.
    """
    cfg_file = Path(path) / "processor_config.json"
    if cfg_file.is_file():
        try:
            cls_name = json.loads(cfg_file.read_text()).get("processor_class")
        except json.JSONDecodeError as e:
            raise FrankenscopeError(f"{cfg_file}: not valid JSON ({e})") from e
        cls = processor_class(cls_name)  # classes AutoProcessor does not know (frankenscope.providers)
        if cls is not None:
            return cls.from_pretrained(str(path))
    proc = AutoProcessor.from_pretrained(str(path))
    if not hasattr(proc, "image_processor"):
        raise FrankenscopeError(
            f"{path}: AutoProcessor returned {type(proc).__name__}, which cannot process images; "
            f"the folder needs a processor_config.json / preprocessor_config.json for a VLM processor")
    return proc


#: A Hugging Face hub id: "name" or "owner/name".
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*(/[A-Za-z0-9][A-Za-z0-9._-]*)?$")


def check_model_source(path: str | Path) -> None:
    """Validate a model argument before anything is loaded or written; errors name the file.

    A local folder needs a config.json holding a JSON object (with a supported architecture, when it
    names one) and safetensors weights whose headers
    parse and whose tensors lie inside the files (pickle-only folders are refused with a conversion
    hint). A path that does not exist is accepted only when it reads as a hub id ("owner/name").
    """
    from frankenscope.weights.reader import INDEX_FILE, check_safetensors_file, no_safetensors_message

    local = Path(path)
    if not local.exists():
        if _HUB_ID.match(str(path)) and not str(path).startswith((".", "~")):
            return
        raise FrankenscopeError(f"{local}: model folder not found")
    if not local.is_dir():
        raise FrankenscopeError(f"{local}: not a model folder (give the folder holding config.json)")
    cfg_file = local / "config.json"
    if not cfg_file.is_file():
        raise FrankenscopeError(f"{local}: not a model folder (no config.json)")
    try:
        cfg = json.loads(cfg_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise FrankenscopeError(f"{cfg_file}: not valid JSON ({e})") from e
    if not isinstance(cfg, dict):
        raise FrankenscopeError(f"{cfg_file}: expected a JSON object")
    archs = cfg.get("architectures")
    if isinstance(archs, list) and archs and isinstance(archs[0], str):
        get_adapter(archs[0])  # an unsupported architecture fails here, naming it
    index = local / INDEX_FILE
    if index.is_file():
        try:
            shards = sorted(set(json.loads(index.read_text())["weight_map"].values()))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise FrankenscopeError(f"{index}: not a valid safetensors index (needs a 'weight_map')") from e
        files = [local / f for f in shards]
    else:
        files = sorted(local.glob("*.safetensors"))
    if not files:
        raise FrankenscopeError(no_safetensors_message(local))
    for f in files:
        check_safetensors_file(f)


def load_model(path: str | Path, *, dtype: str | torch.dtype = "float32", device: str | None = None,
               device_map: str | dict | None = None, attn_implementation: str = "sdpa") -> Loaded:
    """Load model, processor and adapter from an HF folder or hub id.

    attn_implementation: "eager" for analyses that need attention weights, "sdpa" otherwise.
    device_map (e.g. "auto") wins over device; with neither, the model stays on the CPU.
    """
    src = str(path)
    check_model_source(src)
    try:
        config = AutoConfig.from_pretrained(src)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FrankenscopeError(f"{src}: cannot read the model config ({type(e).__name__}: {e})") from e
    adapter = get_adapter(architecture_of(config))  # fails early, naming the architecture
    kwargs: dict[str, Any] = {"dtype": resolve_dtype(dtype), "attn_implementation": attn_implementation,
                              "use_safetensors": True}
    if device_map is not None:
        kwargs["device_map"] = device_map
    try:
        model = AutoModelForImageTextToText.from_pretrained(src, **kwargs)
    except torch.OutOfMemoryError:
        raise
    except (OSError, ValueError, RuntimeError, SafetensorError) as e:
        raise FrankenscopeError(f"{src}: cannot load the model weights ({type(e).__name__}: {e})") from e
    if device_map is None and device is not None:
        model = model.to(device)
    model.eval()
    adapter.check_model(model)  # every module path of the family's spec resolves, or the first that does not is named
    try:
        processor = load_processor(src)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise FrankenscopeError(f"{src}: cannot load the processor ({type(e).__name__}: {e})") from e
    return Loaded(model=model, processor=processor, adapter=adapter, source=src)
