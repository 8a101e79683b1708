"""SmolVLM and Idefics3 (SigLIP vision model, pixel-shuffle connector, Llama language model; the same module
layout in both).

Image tokens: with image splitting an image is a grid of tiles plus a global (downscaled) image; each tile
is `<fake_token_around_image>`, a `<row_i_col_j>` marker (the global image: `<global-img>`), then the tile's
`<image>` tokens; a newline follows each grid row, and one `<fake_token_around_image>` closes the image. The
`<image>` tokens are therefore several runs. For swapping, "image" is the hull of one image's `<image>`
tokens (from the first to the last), so the markers and newlines between tiles are swapped with the
features around them (their keys and values carry the source tiles they attended to); the opening marker
and row marker precede the hull and the closing `<fake_token_around_image>` follows it. For attention mass,
"image" is the `<image>` tokens only (the markers are text).
"""

from __future__ import annotations

from frankenscope.adapters.naming import llm_rules, optional_model, rule
from frankenscope.adapters.spec import AdapterSpec

_VISION = optional_model("vision_model", inner="vision_model")

SMOLVLM = AdapterSpec(
    name="smolvlm",
    architectures=("SmolVLMForConditionalGeneration", "Idefics3ForConditionalGeneration"),
    decoder_layers="model.text_model.layers",
    vision_blocks="model.vision_model.encoder.layers",
    projector="model.connector",
    embed_tokens="model.text_model.embed_tokens",
    final_norm="model.text_model.norm",
    lm_head="lm_head",
    name_rules=(
        rule("vision", "model.vision_model.", _VISION, "encoder.layers.{layer}."),
        rule("vision", "model.vision_model.", _VISION),
        rule("projector", "model.connector.", optional_model("connector")),
        *llm_rules("model.text_model.", optional_model("text_model", inner="model")),
    ),
    attention_modules=("self_attn",),
    mlp_modules=("mlp", "connector"),
    image_keys=("pixel_values", "pixel_attention_mask"),
    image_token_id_field="image_token_id",
)
