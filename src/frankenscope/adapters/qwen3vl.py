"""Qwen3-VL: Qwen2-VL's layout with a learned vision position embedding, interleaved M-RoPE and deepstack.

Deepstack: the outputs of a few vision blocks go through their own mergers (`deepstack_merger_list`) and
are added to the hidden states at the image positions after the first LLM layers. Those mergers are
projectors (`side_projectors`: their output enters the LLM too). The additions touch image positions only,
so a cumulative swap (image positions never recomputed) is unaffected; in single mode the fast engine adds
back, after each layer, whatever the clean target pass added between that layer's output and the next
layer's input (zero except at deepstack layers), which keeps it exact.

Image tokens: as Qwen2-VL (`<|vision_start|>`, the `<|image_pad|>` run = "image", `<|vision_end|>`).
"""

from __future__ import annotations

from torch import nn

from frankenscope.adapters.naming import LANGUAGE_MODEL, WRAP, llm_rules, rule
from frankenscope.adapters.qwen2vl import QWEN2_VL, Qwen2VLAdapter
from frankenscope.adapters.spec import AdapterSpec

_VIS = WRAP + r"(?:model\.)?visual\."

QWEN3_VL = AdapterSpec(
    name="qwen3-vl",
    architectures=("Qwen3VLForConditionalGeneration",),
    decoder_layers=QWEN2_VL.decoder_layers,
    vision_blocks=QWEN2_VL.vision_blocks,
    projector=QWEN2_VL.projector,
    side_projectors=("model.visual.deepstack_merger_list",),
    embed_tokens=QWEN2_VL.embed_tokens,
    final_norm=QWEN2_VL.final_norm,
    lm_head=QWEN2_VL.lm_head,
    name_rules=(
        rule("vision", "model.visual.", _VIS, "blocks.{layer}."),
        rule("projector", "model.visual.", _VIS, "merger."),
        rule("projector", "model.visual.", _VIS, "deepstack_merger_list."),
        rule("vision", "model.visual.", _VIS, "patch_embed."),
        rule("vision", "model.visual.", _VIS, "pos_embed."),
        *llm_rules("model.language_model.", LANGUAGE_MODEL),
    ),
    attention_modules=QWEN2_VL.attention_modules,
    mlp_modules=QWEN2_VL.mlp_modules,
    sequence_keys=QWEN2_VL.sequence_keys,
    image_keys=QWEN2_VL.image_keys,
    image_layout_keys=QWEN2_VL.image_layout_keys,
    image_token_id_field="image_token_id",
    image_start_token_field="vision_start_token_id",
    image_end_token_field="vision_end_token_id",
)


class Qwen3VLAdapter(Qwen2VLAdapter):
    """Qwen3-VL: the `QWEN3_VL` spec; M-RoPE positions as Qwen2-VL (same `get_rope_index` call)."""

    spec = QWEN3_VL

    def image_injection_layers(self, model: nn.Module) -> list[int]:
        """Deepstack: the features of `vision_config.deepstack_visual_indexes` are added after LLM layers 0..k-1."""
        return list(range(len(model.config.vision_config.deepstack_visual_indexes)))
