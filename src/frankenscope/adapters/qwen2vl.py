"""Qwen2-VL and Qwen2.5-VL (same module layout in transformers 5.x): the spec, and M-RoPE positions."""

from __future__ import annotations

import torch
from torch import nn

from frankenscope.adapters.base import VLMAdapter
from frankenscope.adapters.spec import AdapterSpec, NameRule
from frankenscope.errors import FrankenscopeError

# Spellings of each root: transformers 5.x in memory (model.language_model.*, model.visual.*), the
# hub/on-disk layout (model.layers.*, visual.*), and RL-framework exports that wrap the whole thing once
# more (e.g. "module." or "base_model.model.").
_WRAP = r"(?:module\.|base_model\.model\.)?"
_LM = _WRAP + r"(?:model\.language_model\.|model\.|language_model\.model\.|language_model\.)"
_VIS = _WRAP + r"(?:model\.)?visual\."
_HEAD = _WRAP + r"(?:language_model\.)?lm_head\."


def _rule(component: str, root: str, spellings: str, tail: str = "") -> NameRule:
    return NameRule(component=component, root=root, spellings=spellings, tail=tail)


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
        _rule("llm", "model.language_model.", _LM, "layers.{layer}."),
        _rule("embed", "model.language_model.", _LM, "embed_tokens."),
        _rule("final_norm", "model.language_model.", _LM, "norm."),
        _rule("lm_head", "lm_head.", _HEAD),
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
