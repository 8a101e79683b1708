"""Gemma 3 (SigLIP vision tower, pooled soft tokens + linear projection, Gemma 3 language model with
sliding-window and full-attention layers).

Image tokens: an image is `<start_of_image>`, a fixed number (`mm_tokens_per_image`) of
`<image_soft_token>`s, `<end_of_image>`; "image" for swapping and attention = the soft tokens. The language
model attends bidirectionally among the soft tokens of one image (`token_type_ids` == 1, a per-token
sequence key) and causally elsewhere. The fast swap engine stays exact: it replays, row by row, the attention
mask each decoder layer received in the clean target pass (bidirectional image block and sliding window
included), and no text position before the image attends to the image.
"""

from __future__ import annotations

from frankenscope.adapters.naming import llm_rules, optional_model, rule
from frankenscope.adapters.spec import AdapterSpec

_TOWER = optional_model("vision_tower", inner="vision_model")

GEMMA3 = AdapterSpec(
    name="gemma3",
    architectures=("Gemma3ForConditionalGeneration",),
    decoder_layers="model.language_model.layers",
    vision_blocks="model.vision_tower.encoder.layers",
    projector="model.multi_modal_projector",
    embed_tokens="model.language_model.embed_tokens",
    final_norm="model.language_model.norm",
    lm_head="lm_head",
    name_rules=(
        rule("vision", "model.vision_tower.", _TOWER, "encoder.layers.{layer}."),
        rule("vision", "model.vision_tower.", _TOWER),
        rule("projector", "model.multi_modal_projector.", optional_model("multi_modal_projector")),
        *llm_rules(),
    ),
    attention_modules=("self_attn",),
    mlp_modules=("mlp", "multi_modal_projector"),
    sequence_keys=("input_ids", "token_type_ids"),
    image_keys=("pixel_values",),
    images_per_sample=True,
    image_token_id_field="image_token_index",
    image_start_token_field="boi_token_index",
    image_end_token_field="eoi_token_index",
)
