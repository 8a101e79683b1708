"""Adapter for Qwen2-VL and Qwen2.5-VL (same module layout in transformers 5.x)."""

from __future__ import annotations

import re

import torch
from torch import nn

from frankenscope.adapters.base import AttentionProjections, VLMAdapter
from frankenscope.errors import FrankenscopeError

# Optional prefixes seen in the wild: transformers 5.x in memory (model.language_model.*,
# model.visual.*), the hub/on-disk layout (model.layers.*, visual.*), and RL-framework exports that
# wrap the whole thing once more (e.g. "module." or "base_model.model.").
_WRAP = r"(?:module\.|base_model\.model\.)?"
_LM = _WRAP + r"(?:model\.language_model\.|model\.|language_model\.model\.|language_model\.)"
_VIS = _WRAP + r"(?:model\.)?visual\."


class Qwen2VLAdapter(VLMAdapter):
    architectures = ("Qwen2VLForConditionalGeneration", "Qwen2_5_VLForConditionalGeneration")
    name_rules = (
        (_VIS + r"blocks\.(\d+)\.", "vision", True),
        (_VIS + r"merger\.", "projector", False),
        (_VIS + r"(?:patch_embed|rotary_pos_emb)\.", "vision", False),
        (_LM + r"layers\.(\d+)\.", "llm", True),
        (_LM + r"embed_tokens\.", "embed", False),
        (_LM + r"norm\.", "final_norm", False),
        (_WRAP + r"(?:language_model\.)?lm_head\.", "lm_head", False),
    )

    def _lm(self, model: nn.Module) -> nn.Module:
        return model.model.language_model

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return self._lm(model).layers

    def attention(self, model: nn.Module, layer: int) -> nn.Module:
        return self._layer(model, layer).self_attn

    def attention_projections(self, model: nn.Module, layer: int) -> AttentionProjections:
        a = self.attention(model, layer)
        return AttentionProjections(q=a.q_proj, k=a.k_proj, v=a.v_proj, o=a.o_proj)

    def mlp(self, model: nn.Module, layer: int) -> nn.Module:
        return self._layer(model, layer).mlp

    def vision_blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.model.visual.blocks

    def projector(self, model: nn.Module) -> nn.Module:
        return model.model.visual.merger

    def final_norm(self, model: nn.Module) -> nn.Module:
        return self._lm(model).norm

    def embed_tokens(self, model: nn.Module) -> nn.Module:
        return self._lm(model).embed_tokens

    def lm_head(self, model: nn.Module) -> nn.Module:
        return model.lm_head

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

    def canonical_name(self, name: str) -> str:
        loc = self.param_location(name)  # raises on unknown names
        if loc.component in ("vision", "projector"):
            return "model.visual." + re.sub("^" + _VIS, "", name)
        if loc.component == "lm_head":
            return "lm_head." + re.sub("^" + _WRAP + r"(?:language_model\.)?lm_head\.", "", name)
        return "model.language_model." + re.sub("^" + _LM, "", name)
