"""A model family as data: where its modules live, how its parameters are named, what its processor returns.

An `AdapterSpec` is read by the shared code in `VLMAdapter`; adding a family is mostly filling one in
(and a subclass only for real quirks, such as Qwen-VL's multimodal rotary positions). Module paths are
dotted attribute paths resolved by `get_module`; parameter names are matched by `NameRule`s.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from frankenscope.errors import FrankenscopeError

#: The components a parameter can belong to (`ParamLocation.component`).
COMPONENTS: tuple[str, ...] = ("vision", "projector", "embed", "llm", "final_norm", "lm_head")

_LAYER = "{layer}"


def get_module(model: Any, path: str) -> Any:
    """The object at dotted attribute `path` below `model` ("model.language_model.layers"; list items by
    index, "layers.0"). A missing step raises FrankenscopeError naming the whole path and the step."""
    obj = model
    done: list[str] = []
    for part in path.split("."):
        if not part or not hasattr(obj, part):
            where = ".".join(done) or "the model"
            raise FrankenscopeError(f"{type(model).__name__} has no module {path!r}: {where} has no {part!r}")
        obj = getattr(obj, part)
        done.append(part)
    return obj


@dataclass(frozen=True)
class NameRule:
    """The parameters of one component below one root, in every naming the family's weights come in.

    component: one of COMPONENTS.
    root: the in-memory (transformers 5.x) prefix, e.g. "model.visual.".
    spellings: a regex (non-capturing groups only) matching the root in every naming: in memory, on disk,
        in wrapped exports ("module.", "base_model.model."); it must match `root` itself.
    tail: a literal template of what follows the root, "{layer}" standing for the block index:
        "blocks.{layer}." (vision block N), "merger." (no layer).
    """

    component: str
    root: str
    spellings: str
    tail: str

    def __post_init__(self) -> None:
        if self.component not in COMPONENTS:
            raise FrankenscopeError(f"name rule {self.root}{self.tail}: component {self.component!r} is not one "
                                    f"of {', '.join(COMPONENTS)}")
        if self.tail.count(_LAYER) > 1:
            raise FrankenscopeError(f"name rule {self.root}{self.tail}: at most one {_LAYER} per tail")
        if not re.fullmatch(self.spellings, self.root):
            raise FrankenscopeError(f"name rule {self.root}{self.tail}: spellings {self.spellings!r} do not "
                                    f"match the root {self.root!r}")

    @property
    def layered(self) -> bool:
        """Whether the rule's names carry a block index."""
        return _LAYER in self.tail

    def pattern(self, layer: int | None = None) -> str:
        """The anchored regex of this rule's names: the root in any spelling, then the tail. With `layer`,
        only that block's names (the index as a literal); without, the index is captured as group `layer`
        and the spelled root as group `root`."""
        if layer is not None and not self.layered:
            raise FrankenscopeError(f"name rule {self.root}{self.tail} has no layer index")
        index = r"(?P<layer>\d+)" if layer is None else str(int(layer))
        tail = index.join(re.escape(part) for part in self.tail.split(_LAYER))
        root = f"(?P<root>{self.spellings})" if layer is None else f"(?:{self.spellings})"
        return f"^{root}{tail}"


@dataclass(frozen=True)
class DecoderLayerSpec:
    """Submodule paths inside one LLM decoder layer (Llama-style defaults).

    attention, mlp: relative to the layer; q_proj .. o_proj: relative to the attention module; mlp_out
    (the MLP's output projection): relative to the MLP.
    """

    attention: str = "self_attn"
    q_proj: str = "q_proj"
    k_proj: str = "k_proj"
    v_proj: str = "v_proj"
    o_proj: str = "o_proj"
    mlp: str = "mlp"
    mlp_out: str = "down_proj"


@dataclass(frozen=True, kw_only=True)
class AdapterSpec:
    """Everything family-specific that is data.

    Modules (dotted attribute paths from the `*ForConditionalGeneration` model): `decoder_layers` and
    `vision_blocks` (ModuleLists), `projector`, `embed_tokens`, `final_norm`, `lm_head`; `layer` names the
    parts of one decoder layer.

    Parameter names: `name_rules`, tried in order, the first match wins; every parameter of a supported
    checkpoint must match one. `attention_modules` / `mlp_modules`: module names (dotted segments of a
    parameter name) that make a tensor "attention" or "mlp" in weight diffs (attention is tried first).

    Processor output: `sequence_keys` are aligned with `input_ids` (cut when a pass stops early, extended
    when tokens are appended; keys other than input_ids are per-token type ids, 0 on text);
    `image_keys` describe the images; `image_layout_keys` (a subset) fix the image-token layout, so two
    images with equal values there give the same tokens.

    Image tokens: `image_token_id_field` names the config field holding the image token's id; the optional
    `image_start_token_field` / `image_end_token_field` name the fields of the tokens that open and close
    an image's span.

    `images_per_sample`: the processor takes a batch's images as one list per sample (Gemma 3: a flat list is
    read as all images of one sample), not as one flat list.

    `side_projectors`: further projector modules whose output enters the LLM somewhere other than the token
    embeddings (Qwen3-VL's deepstack mergers); `projector` is the one that feeds the image tokens.

    Swap engine: `fast_sweep` False means the fast swap engine is not exact for this family, so the probes
    run the naive engine instead and say why (`fast_sweep_blocker`, required then).
    """

    name: str
    architectures: tuple[str, ...]
    decoder_layers: str
    vision_blocks: str
    projector: str
    embed_tokens: str
    final_norm: str
    lm_head: str
    layer: DecoderLayerSpec = field(default_factory=DecoderLayerSpec)
    name_rules: tuple[NameRule, ...]
    attention_modules: tuple[str, ...] = ("self_attn",)
    mlp_modules: tuple[str, ...] = ("mlp",)
    sequence_keys: tuple[str, ...] = ("input_ids",)
    image_keys: tuple[str, ...] = ("pixel_values",)
    image_layout_keys: tuple[str, ...] = ()
    image_token_id_field: str = "image_token_id"
    image_start_token_field: str | None = None
    image_end_token_field: str | None = None
    side_projectors: tuple[str, ...] = ()
    images_per_sample: bool = False
    fast_sweep: bool = True
    fast_sweep_blocker: str | None = None

    def __post_init__(self) -> None:
        if not self.architectures:
            raise FrankenscopeError(f"adapter spec {self.name}: names no architecture")
        if not self.name_rules:
            raise FrankenscopeError(f"adapter spec {self.name}: has no parameter name rules")
        if not any(r.component == "llm" and r.layered for r in self.name_rules):
            raise FrankenscopeError(f"adapter spec {self.name}: no name rule for the LLM decoder layers "
                                    f"(component 'llm' with a {_LAYER} tail)")
        if "input_ids" not in self.sequence_keys:
            raise FrankenscopeError(f"adapter spec {self.name}: sequence_keys must include input_ids")
        if not self.fast_sweep and not self.fast_sweep_blocker:
            raise FrankenscopeError(f"adapter spec {self.name}: fast_sweep is off but fast_sweep_blocker does not say "
                                    "why")
        stray = set(self.image_layout_keys) - set(self.image_keys)
        if stray:
            raise FrankenscopeError(f"adapter spec {self.name}: image_layout_keys {sorted(stray)} are not "
                                    f"image_keys")

    def module_paths(self) -> dict[str, str]:
        """Every module path of the spec, from the model, with decoder layer 0 standing for each layer."""
        layer0 = f"{self.decoder_layers}.0"
        attn = f"{layer0}.{self.layer.attention}"
        mlp = f"{layer0}.{self.layer.mlp}"
        side = {f"side_projector{i}": path for i, path in enumerate(self.side_projectors)}
        return {
            **side,
            "decoder_layers": self.decoder_layers, "vision_blocks": self.vision_blocks, "projector": self.projector,
            "embed_tokens": self.embed_tokens, "final_norm": self.final_norm, "lm_head": self.lm_head,
            "attention": attn, "q_proj": f"{attn}.{self.layer.q_proj}", "k_proj": f"{attn}.{self.layer.k_proj}",
            "v_proj": f"{attn}.{self.layer.v_proj}", "o_proj": f"{attn}.{self.layer.o_proj}", "mlp": mlp,
            "mlp_out": f"{mlp}.{self.layer.mlp_out}",
        }
