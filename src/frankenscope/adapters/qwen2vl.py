"""Qwen2-VL and Qwen2.5-VL (same module layout in transformers 5.x): the spec, and M-RoPE positions."""

from __future__ import annotations

from typing import Any

import torch
from PIL import Image
from torch import nn

from frankenscope.adapters.base import VLMAdapter
from frankenscope.adapters.naming import WRAP, llm_rules
from frankenscope.adapters.naming import rule as _rule
from frankenscope.adapters.spec import AdapterSpec
from frankenscope.errors import FrankenscopeError

# Spellings of the vision root: transformers 5.x in memory (model.visual.*), the hub/on-disk layout
# (visual.*); the language model's are shared (naming.LANGUAGE_MODEL: model.language_model.*, model.*).
_VIS = WRAP + r"(?:model\.)?visual\."


QWEN2_VL = AdapterSpec(
    name="qwen2-vl",
    architectures=("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration"),
    decoder_layers="model.language_model.layers",
    vision_blocks="model.visual.blocks",
    projector="model.visual.merger",
    embed_tokens="model.language_model.embed_tokens",
    final_norm="model.language_model.norm",
    lm_head="lm_head",
    name_rules=(
        _rule("vision", "model.visual.", _VIS, "blocks.{layer}."),
        _rule("projector", "model.visual.", _VIS, "merger."),
        _rule("vision", "model.visual.", _VIS, "patch_embed."),
        _rule("vision", "model.visual.", _VIS, "rotary_pos_emb."),
        *llm_rules(),
    ),
    # LLM: self_attn.{q,k,v,o}_proj, mlp.{gate,up,down}_proj; vision blocks: attn.{qkv,proj}, mlp.*;
    # the projector's merger.mlp.* counts as mlp, as it always has in the diffs.
    attention_modules=("self_attn", "attn"),
    mlp_modules=("mlp",),
    sequence_keys=("input_ids", "mm_token_type_ids"),
    image_keys=("pixel_values", "image_grid_thw"),
    image_layout_keys=("image_grid_thw",),
    image_token_id_field="image_token_id",
    image_start_token_field="vision_start_token_id",
    image_end_token_field="vision_end_token_id",
)


class Qwen2VLAdapter(VLMAdapter):
    """Qwen2-VL / Qwen2.5-VL: the `QWEN2_VL` spec plus M-RoPE position ids."""

    spec = QWEN2_VL

    def position_ids(self, model: nn.Module, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        """Qwen-VL's 3-row M-RoPE ids [3, B, P] (temporal, height, width) when the batch has images.

        Computed by the model's own `get_rope_index`; it needs `mm_token_type_ids` (without them the model
        silently falls back to 1-D positions) and is called statelessly (unlike `model.model.rope_deltas`,
        which carries state across calls).
        """
        if enc.get("image_grid_thw") is None:
            return super().position_ids(model, enc)
        if enc.get("mm_token_type_ids") is None:
            raise FrankenscopeError("the processor output lacks mm_token_type_ids; M-RoPE positions need it")
        pos, _ = model.model.get_rope_index(enc["input_ids"], mm_token_type_ids=enc["mm_token_type_ids"],
                                            image_grid_thw=enc["image_grid_thw"])
        return pos

    def box_scale(self, enc: dict[str, torch.Tensor], processor: Any, image: Image.Image) -> tuple[float, float]:
        """(sx, sy) = the resized image the model sees (`image_grid_thw` x the patch size) over the original
        size: Qwen-VL answers boxes in the pixels of the resized image. (1, 1) without a grid."""
        grid = enc.get("image_grid_thw")
        patch = getattr(getattr(processor, "image_processor", None), "patch_size", None)
        if grid is None or not patch:
            return (1.0, 1.0)
        _, h, w = (int(x) for x in grid.reshape(-1, 3)[0])
        return (w * patch / image.size[0], h * patch / image.size[1])
