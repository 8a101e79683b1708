"""Supervised fine-tuning of the organism: loss on the response tokens only.

A plain PyTorch loop (AdamW, linear warmup then cosine decay to 10% of the peak rate, gradient
clipping at 1.0): at this size it is faster and easier to read than a Trainer, and it is exact
about which tokens carry loss.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any

import torch
from PIL import Image
from tqdm.auto import tqdm

from frankenscope.adapters import VLMAdapter


@dataclass
class Example:
    """One supervised example: user text (+ optional image) and the target response."""

    text: str
    target: str
    image: Image.Image | None = None


def encode(processor: Any, adapter: VLMAdapter, ex: Example) -> dict[str, torch.Tensor]:
    """Token ids of prompt + target + <|im_end|> with labels = -100 on the prompt.

    Keeps mm_token_type_ids: without it Qwen2.5-VL silently falls back to 1-D positions.
    The response is the tail of the full ids that equals the tokenized `target + eos` (one processor
    call: the image is processed once); if the tokenizer merges across the boundary, the prompt is
    processed on its own to count its tokens. With the organism's processor, a one-image example
    takes its bit-identical fast path (`OrganismProcessor.fast_call`).
    """
    n_img = 0 if ex.image is None else 1
    prompt = adapter.build_prompt(processor, ex.text, n_images=n_img)
    eos = processor.tokenizer.eos_token
    images = None if ex.image is None else [ex.image]
    full = processor.fast_call(prompt + ex.target + eos, ex.image) if images and hasattr(processor, "fast_call") else None
    if full is None:
        full = processor(text=[prompt + ex.target + eos], images=images, return_tensors="pt")
    ids = full["input_ids"][0]
    tail = processor.tokenizer(ex.target + eos, add_special_tokens=False)["input_ids"]
    if 0 < len(tail) < len(ids) and ids[-len(tail):].tolist() == list(tail):
        n_prompt = len(ids) - len(tail)
    else:
        n_prompt = len(processor(text=[prompt], images=images, return_tensors="pt")["input_ids"][0])
    labels = ids.clone()
    labels[:n_prompt] = -100
    out = {"input_ids": ids, "labels": labels, "mm_token_type_ids": full["mm_token_type_ids"][0]}
    if images is not None:
        out["pixel_values"] = full["pixel_values"]
        out["image_grid_thw"] = full["image_grid_thw"]
    return out


def collate(batch: list[dict[str, torch.Tensor]], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad a list of encoded examples into one batch (images concatenated in row order)."""
    n = max(len(b["input_ids"]) for b in batch)

    def pad(key: str, value: int) -> torch.Tensor:
        return torch.stack([torch.cat([b[key], b[key].new_full((n - len(b[key]),), value)]) for b in batch])

    out = {
        "input_ids": pad("input_ids", pad_id),
        "labels": pad("labels", -100),
        "mm_token_type_ids": pad("mm_token_type_ids", 0),
        "attention_mask": torch.stack([torch.arange(n) < len(b["input_ids"]) for b in batch]).long(),
    }
    with_img = [b for b in batch if "pixel_values" in b]
    if with_img:
        out["pixel_values"] = torch.cat([b["pixel_values"] for b in with_img])
        out["image_grid_thw"] = torch.cat([b["image_grid_thw"] for b in with_img])
    return out


def per_example_loss(model: Any, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """Cross-entropy averaged over each example's response tokens, then over examples.

    L = (1/B) sum_b (1/|R_b|) sum_{t in R_b} -log p(y_t | y_<t). A plain token mean would let long
    responses (descriptions, worked solutions) drown short answers ("yes", "3") in a mixed batch.
    """
    labels = batch["labels"]
    logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits[:, :-1].float()
    target = labels[:, 1:]
    nll = torch.nn.functional.cross_entropy(logits.transpose(1, 2), target.clamp(min=0), reduction="none")
    mask = (target != -100).float()
    return ((nll * mask).sum(1) / mask.sum(1).clamp(min=1)).mean()


def lr_at(step: int, steps: int, warmup: int, peak: float) -> float:
    """Linear warmup to `peak`, then cosine decay to 0.1 * peak at the last step."""
    if step < warmup:
        return peak * (step + 1) / warmup
    t = (step - warmup) / max(1, steps - warmup)
    return peak * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t)))


def approx_length(tokenizer: Any, ex: Example) -> int:
    """Tokens of text + target plus one per 28 x 28 pixels of the image (a Qwen2.5-VL merged image
    token): the sort key of length grouping, without running the image processor."""
    n = len(tokenizer(ex.text + ex.target, add_special_tokens=False)["input_ids"])
    return n + (0 if ex.image is None else ex.image.width * ex.image.height // (28 * 28))


def epoch_batches(lengths: list[int], batch_size: int, group: int, rng: random.Random) -> list[list[int]]:
    """One epoch of batches (index lists) with length grouping.

    Shuffle all indices, cut them into mega-batches of `group * batch_size`, sort each mega-batch by
    length, cut it into batches and shuffle the batches: a batch then holds examples of similar
    length, so right-padding wastes little compute, while which examples meet stays random.
    `group` 1 is plain shuffling. The last batch of an epoch may be smaller.
    """
    if batch_size < 1 or group < 1:
        raise ValueError(f"batch_size ({batch_size}) and group ({group}) must be >= 1")
    order = rng.sample(range(len(lengths)), len(lengths))
    mega = group * batch_size
    batches = []
    for m in range(0, len(order), mega):
        chunk = sorted(order[m:m + mega], key=lambda i: lengths[i]) if group > 1 else order[m:m + mega]
        batches += [chunk[b:b + batch_size] for b in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


@contextmanager
def patch_embed_as_matmul(model: Any) -> Iterator[int]:
    """Run Qwen2-VL-style patch embeddings as one matrix product while the context is open.

    Their input is already cut into patches (rows of C * T * P * P values) and their Conv3d has kernel =
    stride = the patch, so conv(x) = x @ W.view(D, -1).T exactly (up to float summation order); CPU
    conv kernels are ~4% of an organism SFT step at this size, the matmul a fraction of that
    (`benchmarks/sft_throughput.py`). Gradients reach `proj.weight` through the view. Yields how many
    modules were rerouted; the original forwards are restored on exit.
    """
    patched = []
    for module in model.modules():
        conv = getattr(module, "proj", None)
        if (isinstance(conv, torch.nn.Conv3d) and conv.bias is None and conv.kernel_size == conv.stride
                and type(module).__name__.endswith("PatchEmbed") and hasattr(module, "embed_dim")):
            def forward(x: torch.Tensor, _m: Any = module) -> torch.Tensor:
                w = _m.proj.weight
                return torch.nn.functional.linear(x.to(w.dtype).reshape(-1, w[0].numel()), w.reshape(w.shape[0], -1))

            module.forward = forward
            patched.append(module)
    try:
        yield len(patched)
    finally:
        for module in patched:
            del module.forward


def train_sft(model: Any, processor: Any, adapter: VLMAdapter, examples: list[Example], *, steps: int,
              batch_size: int = 8, lr: float = 3e-4, warmup: int = 50, weight_decay: float = 0.01,
              seed: int = 0, length_group: int = 1, fused: bool = True, matmul_patch_embed: bool = True,
              progress: bool = True, desc: str = "sft") -> dict[str, Any]:
    """Train `model` in place for `steps` optimizer steps on batches drawn from `examples`
    (`length_group` > 1: length-grouped batches, see `epoch_batches`). `fused`: torch's fused AdamW
    (one kernel over all tensors; on CPU the default is a per-tensor Python loop);
    `matmul_patch_embed`: see `patch_embed_as_matmul`. Both are speed only (`benchmarks/sft_throughput.py`).

    Returns {steps, final_loss (mean of the last 50 steps), losses (every 10th step), padding (padded
    tokens / real tokens over all batches)}.
    """
    if not examples:
        raise ValueError("train_sft needs at least one example")
    pad_id = processor.tokenizer.pad_token_id
    rng = random.Random(seed)
    torch.manual_seed(seed)
    lengths = [approx_length(processor.tokenizer, ex) for ex in examples] if length_group > 1 else [0] * len(examples)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=fused)
    model.train()
    losses: list[float] = []
    queue: list[list[int]] = []
    padded = real = 0
    bar = tqdm(range(steps), desc=desc, disable=not progress)
    with patch_embed_as_matmul(model) if matmul_patch_embed else nullcontext():
        for step in bar:
            if not queue:
                queue = epoch_batches(lengths, batch_size, length_group, rng)
            idx = queue.pop()
            batch = collate([encode(processor, adapter, examples[i]) for i in idx], pad_id)  # lazily: low memory
            padded += batch["attention_mask"].numel()
            real += int(batch["attention_mask"].sum())
            for g in opt.param_groups:
                g["lr"] = lr_at(step, steps, warmup, lr)
            loss = per_example_loss(model, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            losses.append(loss.item())
            if step % 10 == 0:
                bar.set_postfix(loss=f"{sum(losses[-50:]) / len(losses[-50:]):.3f}")
    model.eval()
    tail = losses[-50:] or [float("nan")]
    return {"steps": steps, "final_loss": sum(tail) / len(tail), "losses": losses[::10],
            "padding": round(padded / max(real, 1), 4)}
