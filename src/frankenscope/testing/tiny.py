"""Tiny random configs of real VLM architectures (no hub access needed)."""

from __future__ import annotations

import torch
from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration

from frankenscope.organism.processor import build_processor


def tiny_qwen2vl(seed: int = 0, layers: int = 3, vision_depth: int = 2,
                 initializer_range: float = 0.02) -> Qwen2VLForConditionalGeneration:
    """A random Qwen2-VL (~0.3M params) sharing the organism tokenizer's special-token ids."""
    tok = build_processor().tokenizer
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|image_pad|>", "<|video_pad|>", "<|vision_start|>",
                                                      "<|vision_end|>", "<|im_end|>", "<pad>")}
    cfg = Qwen2VLConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=layers,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=initializer_range,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<pad>"]),
        vision_config=dict(depth=vision_depth, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, initializer_range=initializer_range),
        image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
        vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"],
        bos_token_id=None, eos_token_id=ids["<|im_end|>"], pad_token_id=ids["<pad>"],
        initializer_range=initializer_range,
    )
    cfg.architectures = ["Qwen2VLForConditionalGeneration"]
    torch.manual_seed(seed)
    return Qwen2VLForConditionalGeneration(cfg).eval()
