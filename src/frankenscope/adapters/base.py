"""The adapter: everything model-family-specific, answered from the family's `AdapterSpec`.

An adapter tells the rest of frankenscope where things are inside one VLM family: the LLM decoder
layers, their attention projections and MLP, the vision blocks, the projector, the image token and
its spans in `input_ids`, which processor outputs run along the sequence, how parameter names map to
(component, layer), and how to build a prompt. `VLMAdapter` implements all of it from the spec's data;
a family subclasses it only for behaviour that is not data (Qwen-VL's M-RoPE positions).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

import torch
from PIL import Image
from torch import nn

from frankenscope.adapters.spec import COMPONENTS, AdapterSpec, NameRule, get_module
from frankenscope.errors import FrankenscopeError

Component = Literal["vision", "projector", "embed", "llm", "final_norm", "lm_head"]
MatrixKind = Literal["attention", "mlp", "other"]

__all__ = ["COMPONENTS", "AttentionProjections", "Component", "MatrixKind", "ParamLocation", "VLMAdapter"]


@dataclass(frozen=True)
class ParamLocation:
    """Where a parameter lives.

    component: one of COMPONENTS.
    layer: the block index inside its component (vision block N, LLM decoder layer N); None for
        parameters outside the repeated blocks (patch embedding, projector, embeddings, norms, head).
    """

    component: str
    layer: int | None = None

    def unified_index(self, n_vision_blocks: int) -> int | None:
        """Position on the unified depth axis: vision blocks 0..V-1, projector V, LLM layers V+1..V+L.

        Parameters outside that axis (vision patch embedding, token embeddings, final norm, lm_head)
        return None.
        """
        if self.component == "vision" and self.layer is not None:
            return self.layer
        if self.component == "projector":
            return n_vision_blocks
        if self.component == "llm" and self.layer is not None:
            return n_vision_blocks + 1 + self.layer
        return None


@dataclass(frozen=True)
class AttentionProjections:
    q: nn.Module
    k: nn.Module
    v: nn.Module
    o: nn.Module


class VLMAdapter:
    """One family's adapter: every lookup is resolved from `spec` (a subclass may set it as a class
    attribute; `VLMAdapter(spec)` serves a family without quirks)."""

    spec: AdapterSpec

    def __init__(self, spec: AdapterSpec | None = None) -> None:
        if spec is not None:
            self.spec = spec
        if getattr(self, "spec", None) is None:
            raise FrankenscopeError(f"{type(self).__name__} has no AdapterSpec")
        self._rules = [(re.compile(r.pattern()), r) for r in self.spec.name_rules]

    @property
    def architectures(self) -> tuple[str, ...]:
        """HF `config.architectures` names this adapter serves."""
        return self.spec.architectures

    # -- modules ---------------------------------------------------------------------------
    def check_model(self, model: nn.Module) -> None:
        """Resolve every module path of the spec on `model` (FrankenscopeError names the first that fails)."""
        for path in self.spec.module_paths().values():
            get_module(model, path)

    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        return get_module(model, self.spec.decoder_layers)

    def attention(self, model: nn.Module, layer: int) -> nn.Module:
        return self._in_layer(model, layer, self.spec.layer.attention)

    def attention_projections(self, model: nn.Module, layer: int) -> AttentionProjections:
        names = self.spec.layer
        q, k, v, o = (self._in_layer(model, layer, f"{names.attention}.{p}")
                      for p in (names.q_proj, names.k_proj, names.v_proj, names.o_proj))
        return AttentionProjections(q=q, k=k, v=v, o=o)

    def mlp(self, model: nn.Module, layer: int) -> nn.Module:
        return self._in_layer(model, layer, self.spec.layer.mlp)

    def mlp_output(self, model: nn.Module, layer: int) -> nn.Module:
        """The MLP's output projection (Llama/Qwen `down_proj`)."""
        return self._in_layer(model, layer, f"{self.spec.layer.mlp}.{self.spec.layer.mlp_out}")

    def vision_blocks(self, model: nn.Module) -> nn.ModuleList:
        return get_module(model, self.spec.vision_blocks)

    def projector(self, model: nn.Module) -> nn.Module:
        """The projector that turns vision features into the image tokens' embeddings."""
        return get_module(model, self.spec.projector)

    def projectors(self, model: nn.Module) -> list[nn.Module]:
        """Every projector whose output enters the LLM: `projector`, then the spec's side projectors."""
        return [self.projector(model), *(get_module(model, p) for p in self.spec.side_projectors)]

    def final_norm(self, model: nn.Module) -> nn.Module:
        return get_module(model, self.spec.final_norm)

    def embed_tokens(self, model: nn.Module) -> nn.Module:
        return get_module(model, self.spec.embed_tokens)

    def lm_head(self, model: nn.Module) -> nn.Module:
        return get_module(model, self.spec.lm_head)

    def num_layers(self, model: nn.Module) -> int:
        return len(self.decoder_layers(model))

    def num_vision_blocks(self, model: nn.Module) -> int:
        return len(self.vision_blocks(model))

    def _layer(self, model: nn.Module, layer: int) -> nn.Module:
        layers = self.decoder_layers(model)
        if not 0 <= layer < len(layers):
            raise FrankenscopeError(f"LLM layer {layer} does not exist: the model has layers 0..{len(layers) - 1}")
        return layers[layer]

    def _in_layer(self, model: nn.Module, layer: int, path: str) -> nn.Module:
        """The submodule at `path` inside decoder layer `layer`; a missing one is named by its full path."""
        block = self._layer(model, layer)
        try:
            return get_module(block, path)
        except FrankenscopeError as e:
            raise FrankenscopeError(f"{type(model).__name__} has no module "
                                    f"'{self.spec.decoder_layers}.{layer}.{path}' ({e})") from None

    # -- tokens ----------------------------------------------------------------------------
    def image_token_id(self, model_or_config: Any) -> int:
        """The image token's id, from the config field the spec names."""
        tid = self._config_token(model_or_config, self.spec.image_token_id_field)
        if tid is None:
            cfg = getattr(model_or_config, "config", model_or_config)
            raise FrankenscopeError(f"config of {type(cfg).__name__} has no {self.spec.image_token_id_field}")
        return tid

    def image_marker_ids(self, model_or_config: Any) -> tuple[int | None, int | None]:
        """(start, end): the ids of the tokens that open and close an image's span; None where the family
        has no such token (or the config lacks the field)."""
        return (self._config_token(model_or_config, self.spec.image_start_token_field),
                self._config_token(model_or_config, self.spec.image_end_token_field))

    @staticmethod
    def _config_token(model_or_config: Any, field: str | None) -> int | None:
        if field is None:
            return None
        tid = getattr(getattr(model_or_config, "config", model_or_config), field, None)
        return None if tid is None else int(tid)

    @staticmethod
    def image_spans(input_ids: torch.Tensor, image_token_id: int) -> list[list[tuple[int, int]]]:
        """Contiguous runs of the image token per row, as half-open [start, end) intervals.

        Accepts a 1-D (one sequence) or 2-D (batch) tensor; always returns one list per row.
        """
        ids = input_ids if input_ids.dim() == 2 else input_ids.unsqueeze(0)
        out: list[list[tuple[int, int]]] = []
        for row in ids:
            mask = (row == image_token_id).to(torch.int8)
            edges = torch.diff(torch.cat([mask.new_zeros(1), mask, mask.new_zeros(1)]))
            starts = torch.nonzero(edges == 1).flatten().tolist()
            ends = torch.nonzero(edges == -1).flatten().tolist()
            out.append(list(zip(starts, ends, strict=True)))
        return out

    def image_token_mask(self, model_or_config: Any, input_ids: torch.Tensor) -> torch.Tensor:
        """Bool mask of the positions that carry image features (the image token), same shape as `input_ids`.

        These are the "image" positions of the attention mass; start/end/row markers are text."""
        return input_ids == self.image_token_id(model_or_config)

    def swap_span(self, model_or_config: Any, input_ids: torch.Tensor) -> tuple[int, int] | None:
        """The positions a visual-token swap replaces in one row (1-D `input_ids`) holding one image: the
        half-open hull [first image token, last image token + 1), so tokens between an image's feature runs
        (SmolVLM's tile markers and newlines) are swapped with them; None when the row has no image token.
        Markers before the hull are identical in target and source (causal attention); those after it
        are recomputed with the rest of the text."""
        pos = torch.nonzero(self.image_token_mask(model_or_config, input_ids)).flatten()
        return None if pos.numel() == 0 else (int(pos[0]), int(pos[-1]) + 1)

    def box_scale(self, enc: dict[str, torch.Tensor], processor: Any, image: Image.Image) -> tuple[float, float]:
        """(sx, sy): how box coordinates in original-image pixels map to the coordinates the model answers in.

        Default (1, 1): the family answers in original-image pixels or its own normalised frame, which
        the gold boxes must already use. Families that answer in the pixels of a resized image override it."""
        return (1.0, 1.0)

    def image_injection_layers(self, model: nn.Module) -> list[int]:
        """LLM layers after which the model adds vision features to the image positions' hidden states
        (Qwen3-VL's deepstack); none by default. Replacing the image hidden states at the input of layer l
        equals the cumulative K/V swap from l only for l after all of them."""
        return []

    def processor_images(self, images: list[Image.Image]) -> list[Any]:
        """A batch's images (one per prompt) in the form the family's processor reads: a flat list, or one list
        per sample (`AdapterSpec.images_per_sample`)."""
        return [[im] for im in images] if self.spec.images_per_sample else list(images)

    def fast_sweep_blocker(self) -> str | None:
        """Why the fast swap engine is not exact for this family (None when it is)."""
        return None if self.spec.fast_sweep else self.spec.fast_sweep_blocker

    def position_ids(self, model: nn.Module, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        """Explicit position ids of an encoded (processor output) batch: [B, P] = 0..P-1.

        Models with multimodal rotary positions (Qwen-VL's M-RoPE) override this. Probes pass the ids
        explicitly, so no position state is carried between forward calls.
        """
        ids = enc["input_ids"]
        return torch.arange(ids.shape[1], device=ids.device).unsqueeze(0).expand(ids.shape[0], -1)

    # -- processor outputs -----------------------------------------------------------------
    @property
    def sequence_keys(self) -> tuple[str, ...]:
        """Processor outputs aligned with `input_ids` (attention_mask aside)."""
        return self.spec.sequence_keys

    @property
    def image_layout_keys(self) -> tuple[str, ...]:
        """Processor outputs that fix the image-token layout (equal values: the same image tokens)."""
        return self.spec.image_layout_keys

    def same_image_layout(self, a: dict[str, Any], b: dict[str, Any]) -> bool:
        """Whether two encodings agree on every image layout key both hold (so their image tokens match)."""
        return all(a.get(k) is None or b.get(k) is None or torch.equal(a[k], b[k])
                   for k in self.spec.image_layout_keys)

    def truncate_inputs(self, enc: dict[str, Any], end: int) -> dict[str, Any]:
        """`enc` with every sequence-aligned tensor cut to positions [0, end); other entries as they are."""
        return {k: (v[:, :end] if k in self.spec.sequence_keys else v) for k, v in enc.items()}

    def append_text_tokens(self, enc: dict[str, Any], ids: torch.Tensor) -> dict[str, Any]:
        """`enc` with text tokens `ids` [B, n] appended: input_ids extended by them, every other
        sequence-aligned key (per-token type ids) by zeros, i.e. "text"."""
        out = dict(enc)
        for k in self.spec.sequence_keys:
            if k in enc:
                out[k] = torch.cat([enc[k], ids if k == "input_ids" else torch.zeros_like(ids)], dim=1)
        return out

    # -- parameter names -------------------------------------------------------------------
    def _match(self, name: str) -> tuple[re.Match[str], NameRule]:
        for rx, rule in self._rules:
            m = rx.match(name)
            if m:
                return m, rule
        roots = ", ".join(dict.fromkeys(r.root for r in self.spec.name_rules))
        raise FrankenscopeError(
            f"parameter {name!r} does not match any known {self.spec.name} naming (in-memory roots: {roots}; "
            f"on-disk and wrapped spellings of them are accepted)")

    def param_location(self, name: str) -> ParamLocation:
        """Map a parameter name (on-disk or in-memory naming) to its component and layer."""
        m, rule = self._match(name)
        return ParamLocation(rule.component, int(m.group("layer")) if rule.layered else None)

    def canonical_name(self, name: str) -> str:
        """The in-memory (transformers 5.x) name of a parameter given in any supported naming."""
        m, rule = self._match(name)
        return rule.root + name[m.end("root"):]

    def layer_patterns(self, layers: Iterable[int], component: str = "llm") -> list[str]:
        """Anchored regexes, one per block of `component` in `layers`, matching that block's parameter
        names in every naming the spec knows (what external trainers need to freeze a layer)."""
        rules = [r for r in self.spec.name_rules if r.component == component and r.layered]
        if not rules:
            raise FrankenscopeError(f"{self.spec.name}: no layered name rule for component {component!r}")
        return ["|".join(r.pattern(i) for r in rules) for i in layers]

    def matrix_kind(self, name: str) -> MatrixKind:
        """'attention' or 'mlp' when a dotted segment of `name` is one of the spec's attention / MLP module
        names (attention first), else 'other'."""
        parts = set(name.split("."))
        if parts & set(self.spec.attention_modules):
            return "attention"
        if parts & set(self.spec.mlp_modules):
            return "mlp"
        return "other"

    # -- prompts and images ----------------------------------------------------------------
    def build_messages(self, text: str, n_images: int = 1, system: str | None = None) -> list[dict[str, Any]]:
        """Chat messages with the images first, then the text (the reference scripts' order)."""
        content: list[dict[str, Any]] = [{"type": "image"} for _ in range(n_images)]
        content.append({"type": "text", "text": text})
        msgs: list[dict[str, Any]] = []
        if system is not None:
            msgs.append({"role": "system", "content": [{"type": "text", "text": system}]})
        msgs.append({"role": "user", "content": content})
        return msgs

    def build_prompt(self, processor: Any, text: str, n_images: int = 1, system: str | None = None) -> str:
        """The chat-formatted prompt string (with the generation prompt appended)."""
        msgs = self.build_messages(text, n_images, system)
        return processor.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)

    @staticmethod
    def black_image(image: Image.Image) -> Image.Image:
        """An all-black RGB image of the same size (the paper's M_vis control)."""
        return Image.new("RGB", image.size, (0, 0, 0))

