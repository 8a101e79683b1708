"""InternVL (HF format: InternVL3 / 3.5 `-hf` checkpoints): InternViT tower, pixel-shuffle + MLP projector,
Qwen2 language model.

Image tokens: an image is `<img>`, then 256 (here `image_seq_length`) `<IMG_CONTEXT>` tokens per tile
(dynamic tiles plus a thumbnail when there is more than one tile), then `</img>`. "Image" for swapping and
attention = the `<IMG_CONTEXT>` run; `<img>` precedes the image (identical in target and source under causal
attention) and `</img>` follows it (recomputed like the rest of the text after the image). The token count
depends on the number of tiles, which the swap check compares through the token spans.
"""

from __future__ import annotations

from frankenscope.adapters.naming import llm_rules, optional_model, rule
from frankenscope.adapters.spec import AdapterSpec

_TOWER = optional_model("vision_tower")

INTERNVL = AdapterSpec(
    name="internvl",
    architectures=("InternVLForConditionalGeneration",),
    decoder_layers="model.language_model.layers",
    vision_blocks="model.vision_tower.encoder.layer",
    projector="model.multi_modal_projector",
    embed_tokens="model.language_model.embed_tokens",
    final_norm="model.language_model.norm",
    lm_head="lm_head",
    name_rules=(
        rule("vision", "model.vision_tower.", _TOWER, "encoder.layer.{layer}."),
        rule("vision", "model.vision_tower.", _TOWER),
        rule("projector", "model.multi_modal_projector.", optional_model("multi_modal_projector")),
        *llm_rules(),
    ),
    attention_modules=("self_attn", "attention"),
    mlp_modules=("mlp", "multi_modal_projector"),
    image_keys=("pixel_values",),
    image_token_id_field="image_token_id",
)
