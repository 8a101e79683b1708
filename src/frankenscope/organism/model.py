"""Organism presets: tiny Qwen2.5-VL configs built from random init, saved as standard HF folders."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration

from frankenscope.errors import FrankenscopeError
from frankenscope.io import atomic_dir
from frankenscope.organism.processor import OrganismProcessor, build_processor

# text: hidden, layers, heads, kv heads, intermediate; vision: depth, hidden, heads, intermediate.
PRESETS: dict[str, dict[str, int]] = {
    "micro": dict(hidden=128, layers=4, heads=4, kv_heads=2, inter=384, v_depth=2, v_hidden=64, v_heads=2, v_inter=192),
    "small": dict(hidden=256, layers=6, heads=4, kv_heads=2, inter=768, v_depth=2, v_hidden=128, v_heads=4, v_inter=384),
}


#: RoPE base of the organism's LLM (Qwen2.5-VL's own is 1e6 at head_dim 128; see `mrope_section`).
ROPE_THETA = 10000.0


def mrope_section(head_dim: int) -> list[int]:
    """M-RoPE sections (temporal, height, width) in frequency pairs; they add up to head_dim / 2.

    Qwen2.5-VL hands out the rotary frequencies omega_i = theta^(-2i / head_dim) in contiguous
    chunks: temporal gets the highest, then height, and width the lowest. All image tokens share one
    temporal index, so only the height and width chunks tell image tokens apart by position. With
    theta 1e4, head_dim 64 and Qwen's proportions (8, 12, 12), width rotates by at most 0.003 rad per
    column and height by at most 0.1 rad per row: the LLM cannot tell the cells of the 4 x 4 token
    grid apart, and the Base read 20% of 2-3 digit lines exactly (per digit 44%).
    Sections (1, 3, rest) give height 0.75-0.42 rad per row and width 0.32 rad per column at the top
    of its chunk, down to 1.3e-4 at its end (position-invariant dimensions for content lookups); the
    same recipe's Base then reads 85% of the digit lines exactly (per digit 94%). Text tokens carry
    the same position on all three axes, so text keeps the whole spectrum.
    """
    half = head_dim // 2
    if half < 5:
        raise FrankenscopeError(f"head_dim {head_dim} is too small for three M-RoPE sections (need >= 10)")
    return [1, 3, half - 4]


def architecture(preset: str) -> dict[str, Any]:
    """What fixes a preset's architecture (part of the Base stage's key: changing it retrains)."""
    if preset not in PRESETS:
        raise FrankenscopeError(f"unknown organism preset {preset!r}; choose one of {sorted(PRESETS)}")
    p = PRESETS[preset]
    return {**p, "rope_theta": ROPE_THETA, "mrope_section": mrope_section(p["hidden"] // p["heads"])}


def organism_config(preset: str, processor: OrganismProcessor, initializer_range: float = 0.02) -> Qwen2_5_VLConfig:
    """The Qwen2.5-VL config of a preset (`micro` ~1.1M params, `small` ~6.2M params)."""
    p = architecture(preset)
    tok = processor.tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                      "<|vision_end|>", "<|im_end|>", "<pad>")}
    cfg = Qwen2_5_VLConfig(
        text_config=dict(
            vocab_size=len(tok), hidden_size=p["hidden"], intermediate_size=p["inter"],
            num_hidden_layers=p["layers"], num_attention_heads=p["heads"], num_key_value_heads=p["kv_heads"],
            max_position_embeddings=2048, rms_norm_eps=1e-6, initializer_range=initializer_range,
            rope_parameters={"rope_type": "default", "rope_theta": p["rope_theta"], "mrope_section": p["mrope_section"]},
            bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<pad>"],
        ),
        vision_config=dict(
            depth=p["v_depth"], hidden_size=p["v_hidden"], intermediate_size=p["v_inter"], num_heads=p["v_heads"],
            patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
            out_hidden_size=p["hidden"], fullatt_block_indexes=[p["v_depth"] - 1], initializer_range=initializer_range,
        ),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<pad>"],
        tie_word_embeddings=True, initializer_range=initializer_range,
    )
    cfg.architectures = ["Qwen2_5_VLForConditionalGeneration"]
    return cfg


def build_organism(preset: str = "small", seed: int = 0, initializer_range: float = 0.02,
                   ) -> tuple[Qwen2_5_VLForConditionalGeneration, OrganismProcessor]:
    """A freshly initialised organism model (float32, eval mode) and its processor, deterministic in `seed`."""
    processor = build_processor()
    cfg = organism_config(preset, processor, initializer_range)
    torch.manual_seed(seed)
    model = Qwen2_5_VLForConditionalGeneration(cfg).eval()
    model.generation_config.pad_token_id = cfg.text_config.pad_token_id
    model.generation_config.eos_token_id = cfg.text_config.eos_token_id
    model.generation_config.bos_token_id = None
    model.generation_config.do_sample = False
    return model, processor


def save_folder(model: Any, processor: Any, out: str | Path, extra_files: dict[str, str] | None = None) -> Path:
    """Save model + processor as a standard HF folder, atomically (nothing appears until complete)."""
    out = Path(out)
    with atomic_dir(out) as tmp:
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        for name, text in (extra_files or {}).items():
            (tmp / name).write_text(text)
    return out
