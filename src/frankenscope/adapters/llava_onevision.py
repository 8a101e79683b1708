"""LLaVA-OneVision (SigLIP vision tower, 2-layer MLP projector, Qwen2 language model).

Image tokens: every `<image>` token carries one feature: the base image's features, then the any-resolution
grid's (unpadded) features with one learned newline vector after each grid row. The newline vectors sit on
`<image>` tokens too, so the image is one contiguous run of the image token and all of it counts as "image"
for swapping and attention. There are no start/end marker tokens. The token count depends on the image size,
so a swap needs the same `image_sizes` (or `resize_source`).
"""

from __future__ import annotations

from frankenscope.adapters.naming import WRAP, llm_rules, optional_model, rule
from frankenscope.adapters.spec import AdapterSpec

_TOWER = optional_model("vision_tower", inner="vision_model")
_PROJ = optional_model("multi_modal_projector")

LLAVA_ONEVISION = AdapterSpec(
    name="llava-onevision",
    architectures=("LlavaOnevisionForConditionalGeneration",),
    decoder_layers="model.language_model.layers",
    vision_blocks="model.vision_tower.encoder.layers",
    projector="model.multi_modal_projector",
    embed_tokens="model.language_model.embed_tokens",
    final_norm="model.language_model.norm",
    lm_head="lm_head",
    name_rules=(
        rule("vision", "model.vision_tower.", _TOWER, "encoder.layers.{layer}."),
        rule("vision", "model.vision_tower.", _TOWER),
        rule("projector", "model.multi_modal_projector.", _PROJ),
        rule("projector", "model.", WRAP + r"(?:model\.)?", "image_newline"),
        *llm_rules(),
    ),
    attention_modules=("self_attn", "attention"),
    mlp_modules=("mlp", "multi_modal_projector"),
    image_keys=("pixel_values", "image_sizes", "batch_num_images"),
    image_layout_keys=("image_sizes",),
    image_token_id_field="image_token_index",
)
