"""Generation backends of evaluation: `hf` (transformers, the default) and `vllm` (`frankenscope[vllm]`).

A `GenerationSpec` says how one model's responses are produced; `spec.settings()` is the part that enters
the response-cache key and the records (`generation` in OUT/models/<label>.json), and `spec.build()`
makes the generator. Both backends decode greedily (no sampling, repetition penalty 1.0, `max_new_tokens`
new tokens at most) from the same chat prompt (`adapter.build_prompt`) and the same image (black for the
M_vis control, downscaled to `max_image_pixels`), and return one string per item in item order, so the
records and cache entries they write have the same form. Their responses are not assumed equal: the
backend name is part of the cache key ("generator": "hf" | "vllm"), so an HF answer is never served for
a vLLM run or the other way round.

vLLM is imported only when a vLLM generator is built; without it the error names
`pip install 'frankenscope[vllm]'`.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError

BACKENDS = ("hf", "vllm")
#: vLLM engine settings that change responses (kept in the cache key); memory fraction, tensor parallelism
#: and prefix caching change speed and floating-point noise only (like the HF batch size) and stay out.
VLLM_KEY_SETTINGS = ("max_model_len",)
VLLM_DEFAULTS: dict[str, Any] = {"tensor_parallel_size": 1, "gpu_memory_utilization": 0.9, "max_model_len": None,
                                 "enable_prefix_caching": True}


@dataclass(frozen=True)
class GenerationSpec:
    """How one model is loaded and decoded. `vllm`: VLLM_DEFAULTS keys (only read by the vllm backend)."""

    model: str
    backend: str = "hf"
    system: str | None = None
    max_new_tokens: int = 64
    batch_size: int | str = 16  # or "auto": from free GPU memory once the model is loaded (`model_batch_size`)
    max_image_pixels: int | None = None
    dtype: str = "float32"
    device: str | None = None
    device_map: str | None = None
    attn_implementation: str = "sdpa"
    vllm: dict[str, Any] = field(default_factory=dict)
    progress: bool = False

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise FrankenscopeError(f"unknown generation backend {self.backend!r}; choose one of {', '.join(BACKENDS)}")
        unknown = sorted(set(self.vllm) - set(VLLM_DEFAULTS))
        if unknown:
            raise FrankenscopeError(f"unknown vllm setting(s) {unknown}; known: {', '.join(VLLM_DEFAULTS)}")
        parse_batch_size(self.batch_size)

    def vllm_settings(self) -> dict[str, Any]:
        return {**VLLM_DEFAULTS, **self.vllm}

    def settings(self) -> dict[str, Any]:
        """The generation settings recorded with every response and hashed into its cache key (HF: exactly the
        keys evaluation has always used, so existing caches stay valid)."""
        out: dict[str, Any] = {"generator": self.backend, "system": self.system, "max_new_tokens": self.max_new_tokens,
                               "do_sample": False, "repetition_penalty": 1.0, "max_image_pixels": self.max_image_pixels,
                               "dtype": self.dtype, "batch_size": self.batch_size}
        if self.backend == "vllm":
            v = self.vllm_settings()
            out.update({k: v[k] for k in VLLM_KEY_SETTINGS})
        return out

    def build(self) -> Callable[..., list[str]]:
        """The generator (loads the model)."""
        if self.backend == "vllm":
            return VLLMGenerator.from_spec(self)
        from frankenscope.evaluate.runner import HFGenerator
        from frankenscope.loading import load_model

        loaded = load_model(self.model, dtype=self.dtype, device=self.device, device_map=self.device_map,
                            attn_implementation=self.attn_implementation)
        batch = parse_batch_size(self.batch_size)
        if batch == AUTO:
            batch = model_batch_size(loaded.model, prompt_tokens=AUTO_PROMPT_TOKENS,
                                     max_new_tokens=self.max_new_tokens, default=AUTO_CPU_BATCH)
        return HFGenerator(loaded, batch_size=int(batch), max_new_tokens=self.max_new_tokens, system=self.system,
                           progress=self.progress, max_image_pixels=self.max_image_pixels)


AUTO = "auto"
#: `batch_size: auto` sizes a batch's KV cache for this many prompt tokens (a 7B VLM's prompt with one
#: ~1,000-token image and its question) plus max_new_tokens; on the CPU it means AUTO_CPU_BATCH.
AUTO_PROMPT_TOKENS = 2048
AUTO_CPU_BATCH = 16


def parse_batch_size(value: int | str) -> int | str:
    """A batch size: a positive integer, or "auto" (sized from free GPU memory when the model is loaded)."""
    if isinstance(value, str) and value.strip().lower() == AUTO:
        return AUTO
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise FrankenscopeError(f"batch size {value!r}: give a positive integer or 'auto'") from None
    if n < 1:
        raise FrankenscopeError(f"batch size must be >= 1 or 'auto', got {value!r}")
    return n


def vllm_dtype(dtype: str) -> str:
    """frankenscope's dtype names in vLLM's spelling."""
    return {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}.get(dtype, dtype)


class VLLMGenerator:
    """Greedy generation with a vLLM engine (`vllm.LLM`), same prompts and images as `HFGenerator`.

    Every item is one request: the chat prompt built by the model's adapter and, when the item has an image,
    `multi_modal_data={"image": PIL image}` (black for the control). The engine schedules all requests of a
    call together (continuous batching), so there is no batch size. `engine` and `sampling_params` can be
    given (tests, or an engine shared between calls); otherwise they are made from the spec.
    """

    def __init__(self, engine: Any, sampling_params: Any, processor: Any, adapter: Any, *, system: str | None = None,
                 max_image_pixels: int | None = None) -> None:
        self.engine = engine
        self.sampling_params = sampling_params
        self.processor = processor
        self.adapter = adapter
        self.system = system
        self.max_image_pixels = max_image_pixels

    @classmethod
    def from_spec(cls, spec: GenerationSpec) -> VLLMGenerator:
        from frankenscope.extras import require_extra

        vllm = require_extra("vllm", "the vllm generation backend (--backend vllm)")
        from transformers import AutoConfig

        from frankenscope.adapters import architecture_of, get_adapter
        from frankenscope.loading import load_processor

        adapter = get_adapter(architecture_of(AutoConfig.from_pretrained(spec.model)))
        v = spec.vllm_settings()
        engine_kwargs = {"model": spec.model, "tensor_parallel_size": v["tensor_parallel_size"],
                         "gpu_memory_utilization": v["gpu_memory_utilization"],
                         "enable_prefix_caching": v["enable_prefix_caching"], "dtype": vllm_dtype(spec.dtype),
                         "limit_mm_per_prompt": {"image": 1}, "seed": 0}
        if v["max_model_len"] is not None:
            engine_kwargs["max_model_len"] = v["max_model_len"]
        engine = vllm.LLM(**engine_kwargs)
        params = vllm.SamplingParams(temperature=0.0, max_tokens=spec.max_new_tokens, repetition_penalty=1.0,
                                     skip_special_tokens=True)
        return cls(engine, params, load_processor(spec.model), adapter, system=spec.system,
                   max_image_pixels=spec.max_image_pixels)

    def requests(self, items: list[Item], *, black_image: bool = False,
                 use_description: bool = False) -> list[dict[str, Any]]:
        """One vLLM prompt dict per item: {"prompt": chat text} plus {"multi_modal_data": {"image": ...}}."""
        from frankenscope.data.io import load_image
        from frankenscope.evaluate.runner import prompt_text

        out = []
        for it in items:
            n_images = 0 if it.image is None else 1
            req: dict[str, Any] = {"prompt": self.adapter.build_prompt(self.processor, prompt_text(it, use_description),
                                                                       n_images, self.system)}
            if it.image is not None:
                image = load_image(Path(it.image), self.max_image_pixels)
                req["multi_modal_data"] = {"image": self.adapter.black_image(image) if black_image else image}
            out.append(req)
        return out

    def __call__(self, items: list[Item], *, black_image: bool = False, use_description: bool = False) -> list[str]:
        if not items:
            return []
        outputs = self.engine.generate(self.requests(items, black_image=black_image, use_description=use_description),
                                       self.sampling_params, use_tqdm=False)
        if len(outputs) != len(items):
            raise FrankenscopeError(f"vLLM returned {len(outputs)} outputs for {len(items)} prompts")
        return [o.outputs[0].text for o in outputs]


# --------------------------------------------------------------------------- batch size from free memory


def kv_bytes_per_row(*, layers: int, kv_heads: int, head_dim: int, tokens: int, dtype_bytes: int = 2) -> int:
    """Bytes of one sequence's KV cache: keys and values (2) x layers x KV heads x head size x tokens x bytes."""
    return 2 * layers * kv_heads * head_dim * tokens * dtype_bytes


def batch_size_for_memory(free_bytes: int, row_bytes: int, *, fraction: float = 0.8, cap: int = 256) -> int:
    """The largest batch whose KV cache fits in `fraction` of the free memory (at least 1, at most `cap`).

    The rule: floor(free_bytes x fraction / row_bytes), clamped to [1, cap]; the rest of the fraction's
    complement is left for activations and the allocator."""
    if free_bytes < 0 or row_bytes <= 0 or not 0 < fraction <= 1 or cap < 1:
        raise FrankenscopeError(f"batch_size_for_memory: bad arguments (free {free_bytes}, row {row_bytes}, "
                                f"fraction {fraction}, cap {cap})")
    return max(1, min(cap, int(free_bytes * fraction // row_bytes)))


def model_batch_size(model: Any, *, prompt_tokens: int, max_new_tokens: int, default: int,
                     fraction: float = 0.8, cap: int = 256) -> int:
    """`batch_size_for_memory` for a loaded transformers model on a CUDA device (free memory from
    `torch.cuda.mem_get_info`, KV shape from its text config, bytes from its dtype); `default` on the CPU."""
    import torch

    device = next(model.parameters()).device
    if device.type != "cuda":
        return default
    cfg = getattr(model.config, "text_config", None) or model.config
    heads = cfg.num_attention_heads
    row = kv_bytes_per_row(layers=cfg.num_hidden_layers, kv_heads=getattr(cfg, "num_key_value_heads", None) or heads,
                           head_dim=getattr(cfg, "head_dim", None) or cfg.hidden_size // heads,
                           tokens=prompt_tokens + max_new_tokens, dtype_bytes=next(model.parameters()).element_size())
    free, _ = torch.cuda.mem_get_info(device)
    return batch_size_for_memory(free, row, fraction=fraction, cap=cap)


_DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "bfloat16": 2, "bf16": 2}


def batch_for_free_memory(models: list[str], *, rows_per_item: int, max_new_tokens: int, dtype: str,
                          device: str | None, device_map: str | None, default: int,
                          prompt_tokens: int = AUTO_PROMPT_TOKENS, fraction: float = 0.8) -> int:
    """Items per batch of a probe whose `models` (local folders or hub ids) will be loaded together on a GPU,
    before they are loaded: free = `torch.cuda.mem_get_info` of the device minus the models' weights
    (parameters from the safetensors headers x bytes of `dtype`); each item takes `rows_per_item` KV-cache rows
    of the first model's text config (`kv_bytes_per_row`, prompt_tokens + max_new_tokens tokens); the batch is
    `batch_size_for_memory(free, rows_per_item x row)`. `default` on the CPU (no cuda device and no
    device_map) and for a hub id (nothing to read without a download)."""
    import json

    on_gpu = device_map is not None or (device or "cpu").startswith("cuda")
    folders = [Path(m) for m in models]
    if not on_gpu or not all((f / "config.json").is_file() for f in folders):
        return default
    import torch

    from frankenscope.weights.reader import read_header

    n_bytes = _DTYPE_BYTES.get(dtype, 4)
    weights = 0
    for f in folders:
        for st in f.glob("*.safetensors"):
            header, _, _ = read_header(st)
            weights += sum(math.prod(e.get("shape") or [1]) for e in header.values()) * n_bytes
    cfg = json.loads((folders[0] / "config.json").read_text())
    text = cfg.get("text_config") or cfg
    heads = text["num_attention_heads"]
    row = kv_bytes_per_row(layers=text["num_hidden_layers"], kv_heads=text.get("num_key_value_heads") or heads,
                           head_dim=text.get("head_dim") or text["hidden_size"] // heads,
                           tokens=prompt_tokens + max_new_tokens, dtype_bytes=n_bytes)
    free, _ = torch.cuda.mem_get_info(torch.device(device if device and device.startswith("cuda") else "cuda"))
    return batch_size_for_memory(max(0, free - weights), rows_per_item * row, fraction=fraction)
