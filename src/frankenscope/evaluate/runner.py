"""The evaluation runner: generate answers for items, grade them, summarise, write a result file.

Generation is behind the `Generator` protocol so that tests (and API-backed models) can plug in a
stand-in; `HFGenerator` is the transformers implementation (batched greedy decoding, left padding).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol, cast

import torch
from PIL import Image
from tqdm.auto import tqdm

from frankenscope.adapters import VLMAdapter, get_adapter
from frankenscope.data.schema import Item
from frankenscope.errors import FrankenscopeError
from frankenscope.evaluate.extract import extract_answer, grade
from frankenscope.evaluate.metrics import accuracy_summary
from frankenscope.generation import left_padding, load_image, model_device, pad_token_id, rgb_image
from frankenscope.io import sha256_text, write_result
from frankenscope.loading import Loaded

EVAL_SCHEMA_VERSION = 1
DESCRIPTION_PREFIX = "Image description: {description}\n"


class Generator(Protocol):
    """Anything that maps items to one response string per item, in order.

    black_image: replace every image by an all-black image of the same size (the M_vis control).
    use_description: prepend "Image description: {item.description}\\n" to the prompt text; with
        black_image this is the paper's black image + description control (M_v2r).
    """

    def __call__(self, items: list[Item], *, black_image: bool = False,
                 use_description: bool = False) -> list[str]: ...


def prompt_text(item: Item, use_description: bool = False) -> str:
    """The user text for an item: its prompt, preceded by the description line when asked for.

    An item with an image but no description cannot be run with use_description (error); a
    text-only item without description gets its plain prompt.
    """
    if not use_description:
        return item.prompt
    if item.description is None:
        if item.image is not None:
            raise FrankenscopeError(f"item {item.id!r}: use_description needs a description, the item has none")
        return item.prompt
    return DESCRIPTION_PREFIX.format(description=item.description) + item.prompt


def batch_indices(has_image: list[bool], batch_size: int) -> list[list[int]]:
    """The batches `HFGenerator` forms from a list of items (by index): the items with an image first, then the
    text-only ones, each group cut into consecutive runs of `batch_size`. Calling the generator on one of these
    batches alone forms exactly that batch (evaluation shards rely on it to reproduce a local run)."""
    with_image = [i for i, h in enumerate(has_image) if h]
    text_only = [i for i, h in enumerate(has_image) if not h]
    return [idx[s:s + batch_size] for idx in (with_image, text_only) for s in range(0, len(idx), batch_size)]


class HFGenerator:
    """Batched greedy generation with a transformers VLM.

    Decoding: `do_sample=False`, `repetition_penalty=1.0` and `max_new_tokens` passed explicitly, so a
    checkpoint's `generation_config.json` (e.g. Qwen's 1.05 repetition penalty, sampling temperature)
    cannot change the decoding rule; `pad_token_id` is the tokenizer's pad token (else the model's
    eos). Prompts are left-padded, so every row's last prompt token sits at the end and the new tokens
    are `output[:, prompt_len:]`, decoded with skip_special_tokens=True. Items with an image and
    text-only items are batched separately (text-only prompts get n_images=0 and no image input).
    max_image_pixels: optional downscale of large images before the processor (the reference uses
    1280*720); None leaves sizing to the processor.
    """

    def __init__(self, loaded_or_model: Loaded | Any, processor: Any = None, adapter: VLMAdapter | None = None,
                 *, batch_size: int = 16, max_new_tokens: int = 64, system: str | None = None,
                 progress: bool = True, max_image_pixels: int | None = None) -> None:
        if isinstance(loaded_or_model, Loaded):
            self.model = loaded_or_model.model
            processor = processor if processor is not None else loaded_or_model.processor
            adapter = adapter if adapter is not None else loaded_or_model.adapter
        else:
            self.model = loaded_or_model
        if processor is None:
            raise FrankenscopeError("HFGenerator needs a processor (pass a Loaded or the processor)")
        if batch_size < 1 or max_new_tokens < 1:
            raise FrankenscopeError(f"batch_size and max_new_tokens must be >= 1 (got {batch_size}, {max_new_tokens})")
        self.processor = processor
        self.adapter = adapter if adapter is not None else get_adapter(self.model)
        self.batch_size = batch_size
        self.max_new_tokens = max_new_tokens
        self.system = system
        self.progress = progress
        self.max_image_pixels = max_image_pixels

    @property
    def tokenizer(self) -> Any:
        return getattr(self.processor, "tokenizer", self.processor)

    @property
    def device(self) -> torch.device:
        return model_device(self.model)

    def pad_token_id(self) -> int:
        return pad_token_id(self.model, self.tokenizer)

    def generation_kwargs(self) -> dict[str, Any]:
        """The decoding settings passed to `generate` (recorded in result files)."""
        return {"do_sample": False, "max_new_tokens": self.max_new_tokens, "repetition_penalty": 1.0,
                "pad_token_id": self.pad_token_id()}

    def settings(self) -> dict[str, Any]:
        """Everything that determines the responses besides model and items, for result files."""
        return {"generator": "hf", "batch_size": self.batch_size, "system": self.system,
                "max_image_pixels": self.max_image_pixels, "padding_side": "left", **self.generation_kwargs()}

    def __call__(self, items: list[Item], *, black_image: bool = False, use_description: bool = False,
                 images: list[Image.Image | None] | None = None) -> list[str]:
        """Responses in item order. `images` (optional, one per item) supplies in-memory images in
        place of the files named by `item.image`."""
        if images is not None and len(images) != len(items):
            raise FrankenscopeError(f"got {len(images)} images for {len(items)} items")
        texts = [prompt_text(it, use_description) for it in items]

        def image_of(i: int) -> Image.Image | None:
            if images is not None and images[i] is not None:
                return rgb_image(images[i], f"item {items[i].id!r}")
            path = items[i].image
            return None if path is None else load_image(path, self.max_image_pixels)

        has_image = [items[i].image is not None or (images is not None and images[i] is not None)
                     for i in range(len(items))]
        batches = batch_indices(has_image, self.batch_size)
        out = [""] * len(items)
        gen_kwargs = self.generation_kwargs()
        with left_padding(self.tokenizer), torch.inference_mode():
            for batch in tqdm(batches, desc="generate", unit="batch", disable=not self.progress, leave=False):
                batch_images = None
                if has_image[batch[0]]:
                    batch_images = [cast(Image.Image, image_of(i)) for i in batch]
                    if black_image:
                        batch_images = [self.adapter.black_image(im) for im in batch_images]
                n_images = 0 if batch_images is None else 1
                prompts = [self.adapter.build_prompt(self.processor, texts[i], n_images, self.system) for i in batch]
                for i, response in zip(batch, self._generate(prompts, batch_images, gen_kwargs), strict=True):
                    out[i] = response
        return out

    def _generate(self, prompts: list[str], images: list[Image.Image] | None,
                  gen_kwargs: dict[str, Any]) -> list[str]:
        if images is None:
            inputs = self.processor(text=prompts, return_tensors="pt", padding=True)
        else:
            inputs = self.processor(text=prompts, images=self.adapter.processor_images(images), return_tensors="pt",
                                    padding=True)
        inputs = {k: v.to(self.device) if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        output = self.model.generate(**inputs, **gen_kwargs)
        new_tokens = output[:, inputs["input_ids"].shape[1]:]
        return self.tokenizer.batch_decode(new_tokens, skip_special_tokens=True)


@dataclass
class EvalRecord:
    """One graded item: what was asked, the gold answer, the raw response and its extracted answer."""

    id: str
    task: str
    category: str
    prompt: str
    answer: str
    answer_type: str
    response: str
    extracted: str
    correct: bool


@dataclass
class EvalResult:
    """Per-item records plus summaries: overall, per task and per category (each an accuracy_summary)."""

    records: list[EvalRecord]
    overall: dict[str, Any]
    by_task: dict[str, dict[str, Any]]
    by_category: dict[str, dict[str, Any]]
    condition: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        return {"overall": self.overall, "by_task": self.by_task, "by_category": self.by_category}

    def correct_by_id(self) -> dict[str, bool]:
        return {r.id: r.correct for r in self.records}


def _group_summaries(records: list[EvalRecord], key: str, seed: int) -> dict[str, dict[str, Any]]:
    groups: dict[str, list[bool]] = {}
    for r in records:
        groups.setdefault(getattr(r, key), []).append(r.correct)
    return {name: accuracy_summary(vals, seed=seed) for name, vals in sorted(groups.items())}


def evaluate(items: list[Item], generate: Generator, *, seed: int = 0, **gen_kwargs: Any) -> EvalResult:
    """Generate one response per item, grade it (`extract.grade`) and summarise.

    gen_kwargs go to the generator (black_image, use_description). `seed` seeds the bootstrap CIs;
    generation itself is greedy and needs none.
    """
    if not items:
        raise FrankenscopeError("evaluate: no items to evaluate")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise FrankenscopeError("evaluate: item ids are not unique")
    responses = generate(items, **gen_kwargs)
    if len(responses) != len(items):
        raise FrankenscopeError(f"generator returned {len(responses)} responses for {len(items)} items")
    records = [EvalRecord(id=it.id, task=it.task, category=it.category, prompt=it.prompt, answer=it.answer,
                          answer_type=it.answer_type, response=resp, extracted=extract_answer(resp),
                          correct=grade(resp, it))
               for it, resp in zip(items, responses, strict=True)]
    return EvalResult(records=records, overall=accuracy_summary([r.correct for r in records], seed=seed),
                      by_task=_group_summaries(records, "task", seed),
                      by_category=_group_summaries(records, "category", seed),
                      condition={"black_image": False, "use_description": False, **gen_kwargs})


def format_table(result: EvalResult) -> str:
    """A markdown table: task | n | accuracy | 95% CI, one row per task and a final "overall" row."""
    rows = ["| task | n | accuracy | 95% CI |", "|---|---:|---:|---|"]
    for name, s in [*result.by_task.items(), ("overall", result.overall)]:
        rows.append(f"| {name} | {s['n']} | {s['accuracy']:.3f} | [{s['ci_low']:.3f}, {s['ci_high']:.3f}] |")
    return "\n".join(rows)


def write_eval_result(result: EvalResult, out_dir: str | Path, *, model_source: str,
                      model_fingerprint: str | None, seed: int | None, settings: dict[str, Any]) -> Path:
    """Write `out_dir/results.json` atomically (kind "eval", schema_version 1).

    Contents: the io.write_result header (kind, schema_version, created, seed, inputs, versions) with
    inputs = {model_source, model_fingerprint, n_items, item_ids_sha256}, then condition (black_image,
    use_description), settings, summary (overall, by_task, by_category) and the per-item records.
    """
    ids_hash = sha256_text(json.dumps([r.id for r in result.records]))
    inputs = {"model_source": model_source, "model_fingerprint": model_fingerprint,
              "n_items": len(result.records), "item_ids_sha256": ids_hash}
    payload = {"condition": result.condition, "settings": settings, "summary": result.summary(),
               "records": [asdict(r) for r in result.records]}
    return write_result(Path(out_dir) / "results.json", kind="eval", schema_version=EVAL_SCHEMA_VERSION,
                        payload=payload, seed=seed, inputs=inputs)


def model_fingerprint(path: str | Path) -> str:
    """The identity of a model folder: see `frankenscope.evaluate.cache.model_fingerprint`."""
    from frankenscope.evaluate.cache import model_fingerprint as full

    return full(path)
