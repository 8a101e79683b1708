"""The adapter interface: everything model-family-specific lives behind it.

An adapter tells the rest of frankenscope where things are inside one VLM family: the LLM decoder
layers, their attention projections and MLP, the vision blocks, the projector, the image token and
its spans in `input_ids`, how parameter names map to (component, layer), and how to build a prompt.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

import torch
from PIL import Image
from torch import nn

from frankenscope.errors import FrankenscopeError

Component = Literal["vision", "projector", "embed", "llm", "final_norm", "lm_head"]
COMPONENTS: tuple[str, ...] = ("vision", "projector", "embed", "llm", "final_norm", "lm_head")


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
    """Base class: subclasses set `architectures`, `name_rules` and implement the module lookups."""

    #: HF `config.architectures` names this adapter serves.
    architectures: tuple[str, ...] = ()
    #: (regex, component, has_layer_group) tried in order; the first match wins.
    name_rules: tuple[tuple[str, str, bool], ...] = ()

    def __init__(self) -> None:
        self._compiled = [(re.compile(p), c, g) for p, c, g in self.name_rules]

    # -- modules ---------------------------------------------------------------------------
    def decoder_layers(self, model: nn.Module) -> nn.ModuleList:
        raise NotImplementedError

    def attention(self, model: nn.Module, layer: int) -> nn.Module:
        raise NotImplementedError

    def attention_projections(self, model: nn.Module, layer: int) -> AttentionProjections:
        raise NotImplementedError

    def mlp(self, model: nn.Module, layer: int) -> nn.Module:
        raise NotImplementedError

    def vision_blocks(self, model: nn.Module) -> nn.ModuleList:
        raise NotImplementedError

    def projector(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def final_norm(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def embed_tokens(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def lm_head(self, model: nn.Module) -> nn.Module:
        raise NotImplementedError

    def num_layers(self, model: nn.Module) -> int:
        return len(self.decoder_layers(model))

    def num_vision_blocks(self, model: nn.Module) -> int:
        return len(self.vision_blocks(model))

    def _layer(self, model: nn.Module, layer: int) -> nn.Module:
        layers = self.decoder_layers(model)
        if not 0 <= layer < len(layers):
            raise FrankenscopeError(f"LLM layer {layer} does not exist: the model has layers 0..{len(layers) - 1}")
        return layers[layer]

    # -- tokens ----------------------------------------------------------------------------
    def image_token_id(self, model_or_config: Any) -> int:
        cfg = getattr(model_or_config, "config", model_or_config)
        tid = getattr(cfg, "image_token_id", None)
        if tid is None:
            raise FrankenscopeError(f"config of {type(cfg).__name__} has no image_token_id")
        return int(tid)

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

    def position_ids(self, model: nn.Module, enc: dict[str, torch.Tensor]) -> torch.Tensor:
        """Explicit position ids of an encoded (processor output) batch: [B, P] = 0..P-1.

        Models with multimodal rotary positions (Qwen-VL's M-RoPE) override this. Probes pass the ids
        explicitly, so no position state is carried between forward calls.
        """
        ids = enc["input_ids"]
        return torch.arange(ids.shape[1], device=ids.device).unsqueeze(0).expand(ids.shape[0], -1)

    # -- parameter names -------------------------------------------------------------------
    def param_location(self, name: str) -> ParamLocation:
        """Map a parameter name (on-disk or in-memory naming) to its component and layer."""
        for rx, component, has_layer in self._compiled:
            m = rx.match(name)
            if m:
                return ParamLocation(component, int(m.group(1)) if has_layer else None)
        raise FrankenscopeError(
            f"parameter {name!r} does not match any known {type(self).__name__} naming "
            f"(expected e.g. model.layers.N..., model.language_model.layers.N..., visual.blocks.N..., lm_head...)"
        )

    def canonical_name(self, name: str) -> str:
        """The in-memory (transformers 5.x) name of a parameter given in any supported naming."""
        raise NotImplementedError

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
