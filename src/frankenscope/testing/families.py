"""Tiny random checkpoints of each supported VLM family's real architecture, and the facts about each
family's layout that adapters need.

`build_tiny(name)` builds a random model of the family's real HF class (a few LLM layers, small hidden
sizes, a small vision tower) with a processor and an offline tokenizer; `save_tiny(name, out)` writes a
folder that `AutoModelForImageTextToText.from_pretrained` and `AutoProcessor.from_pretrained` load
offline. Nothing is downloaded: the tokenizer is built here from a small vocabulary (characters, a few
words and the family's special tokens, with the exact strings its processor expects).

Processors. Where the family's own processor class runs without torchvision it is used as is (Gemma3,
and Idefics3's processor for SmolVLM). The Qwen, InternVL and LLaVA-OneVision processors require a video
processor, and every video processor in transformers needs torchvision; for those the folder names an
`ImageOnly*` subclass that only drops the video processor (same image processing, same token layout).
`register_auto_processors()` makes `AutoProcessor` find these subclasses by the name written in
`processor_config.json` (through `AutoProcessor.register`, keyed by a name, so no transformers
mapping of a real config is changed); `save_tiny` and `load_tiny_processor` call it. Without it,
`AutoProcessor.from_pretrained` silently returns only the tokenizer for those folders.

Facts (`FamilyFacts`): module paths in memory, parameter-name prefixes on disk (as written by
`save_pretrained`), the image token and the tokens that make up an image's span in `input_ids`;
`image_span_positions` finds the spans; tests/test_families.py checks every fact on the tiny models.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tokenizers import pre_tokenizers
from transformers import (
    AutoProcessor,
    Gemma3Config,
    Gemma3ForConditionalGeneration,
    Gemma3ImageProcessorPil,
    Gemma3Processor,
    GotOcr2ImageProcessorPil,
    Idefics3Processor,
    InternVLConfig,
    InternVLForConditionalGeneration,
    InternVLProcessor,
    LlavaOnevisionConfig,
    LlavaOnevisionForConditionalGeneration,
    LlavaOnevisionImageProcessorPil,
    LlavaOnevisionProcessor,
    PreTrainedTokenizerFast,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
    Qwen2VLConfig,
    Qwen2VLForConditionalGeneration,
    Qwen2VLImageProcessorPil,
    Qwen2VLProcessor,
    Qwen3_5Config,
    Qwen3_5ForConditionalGeneration,
    Qwen3_5Tokenizer,
    Qwen3VLConfig,
    Qwen3VLForConditionalGeneration,
    Qwen3VLProcessor,
    SmolVLMConfig,
    SmolVLMForConditionalGeneration,
    SmolVLMImageProcessorPil,
)

from frankenscope.errors import FrankenscopeError
from frankenscope.organism.tokenizer import wordpiece_core

# --------------------------------------------------------------------------------------------------
# Processors without a video processor (the stock ones require torchvision through it)


class ImageOnlyQwen2VLProcessor(Qwen2VLProcessor):
    """`Qwen2VLProcessor` without its video processor (which needs torchvision); images and text as stock."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class ImageOnlyQwen2_5_VLProcessor(Qwen2_5_VLProcessor):
    """`Qwen2_5_VLProcessor` without its video processor (which needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class ImageOnlyQwen3VLProcessor(Qwen3VLProcessor):
    """`Qwen3VLProcessor` without its video processor (which needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        super().__init__(image_processor, tokenizer, None, chat_template=chat_template, **kwargs)


class ImageOnlyInternVLProcessor(InternVLProcessor):
    """`InternVLProcessor` without its video processor (which needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, image_seq_length: int = 256, chat_template=None,
                 **kwargs):
        super().__init__(image_processor, tokenizer, None, image_seq_length=image_seq_length,
                         chat_template=chat_template, **kwargs)


class ImageOnlyLlavaOnevisionProcessor(LlavaOnevisionProcessor):
    """`LlavaOnevisionProcessor` without its video processor (which needs torchvision)."""

    def __init__(self, image_processor=None, tokenizer=None, num_image_tokens=None,
                 vision_feature_select_strategy=None, chat_template=None, image_token="<image>",
                 video_token="<video>", vision_aspect_ratio="anyres_max_9", **kwargs):
        super().__init__(image_processor, tokenizer, None, num_image_tokens=num_image_tokens,
                         vision_feature_select_strategy=vision_feature_select_strategy, chat_template=chat_template,
                         image_token=image_token, video_token=video_token, vision_aspect_ratio=vision_aspect_ratio,
                         **kwargs)


IMAGE_ONLY_PROCESSORS: tuple[type, ...] = (
    ImageOnlyQwen2VLProcessor, ImageOnlyQwen2_5_VLProcessor, ImageOnlyQwen3VLProcessor, ImageOnlyInternVLProcessor,
    ImageOnlyLlavaOnevisionProcessor,
)


def register_auto_processors() -> None:
    """Let `AutoProcessor.from_pretrained` resolve the `ImageOnly*` class names written in
    `processor_config.json`. Keyed by name (not by a config class), so real checkpoints still map to the
    stock processors; idempotent."""
    for cls in IMAGE_ONLY_PROCESSORS:
        AutoProcessor.register(f"frankenscope.{cls.__name__}", cls, exist_ok=True)


# --------------------------------------------------------------------------------------------------
# Offline tokenizer

_CHARS = string.ascii_letters + string.digits + string.punctuation + " \n"
_WORDS = ("What", "How", "Describe", "the", "image", "is", "in", "this", "many", "shapes", "colour", "of", "a",
          "and", "user", "assistant", "model", "system", "User", "Assistant")


def build_tokenizer(special_tokens: Sequence[str], *, eos: str, pad: str, bos: str | None = None,
                    named: dict[str, str] | None = None, chat_template: str) -> PreTrainedTokenizerFast:
    """A small offline tokenizer: the special tokens (ids 0..), printable characters, WordPiece letter
    continuations and a few whole words, so any ASCII text round-trips.

    named: attribute name -> special-token string (e.g. {"image_token": "<image>"}): the tokenizer then has
    `tok.image_token` and `tok.image_token_id`, which the family processors read.
    """
    vocab: dict[str, int] = {}
    for tok in special_tokens:
        vocab.setdefault(tok, len(vocab))
    for piece in [*_CHARS, *("##" + c for c in string.ascii_letters), *(" " + c for c in string.ascii_letters),
                  *_WORDS, *(" " + w for w in _WORDS)]:
        vocab.setdefault(piece, len(vocab))
    vocab["<unk>"] = len(vocab)
    core = wordpiece_core(vocab, special_tokens)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token=pad, eos_token=eos,
                                  bos_token=bos, extra_special_tokens=dict(named or {}))
    tok.chat_template = chat_template
    tok.padding_side = "left"
    return tok


def _chatml_template(image: str) -> str:
    """ChatML (`<|im_start|>role\\n...<|im_end|>\\n`) with `image` for each image item."""
    return (
        "{% for message in messages %}"
        "{{ '<|im_start|>' + message['role'] + '\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for item in message['content'] %}"
        "{% if item['type'] == 'image' %}{{ '" + image + "' }}"
        "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{{ '<|im_end|>\n' }}"
        "{% endfor %}"
        "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
    )


# --------------------------------------------------------------------------------------------------
# Facts


@dataclass(frozen=True)
class FamilyFacts:
    """What an adapter needs to know about one family (tests/test_families.py checks each on the tiny model).

    Module paths (`llm_layers`, `vision_tower`, `projector`, ...) are attribute paths from the
    `*ForConditionalGeneration` object. `memory_prefixes` / `disk_prefixes` map each component ("vision",
    "projector", "llm_layers", "llm_other" = embeddings, final norm, lm_head) to the parameter-name
    prefixes it owns, in `model.state_dict()` and in `model.safetensors` as `save_pretrained` writes it;
    every parameter matches exactly one component, and `<llm_layers prefix>{i}.` is decoder layer i.
    `image_token_id_field` names the field of config.json holding the image token's id.

    Image span (`image_span_positions`): the tokens of one image in `input_ids`, inclusive: from
    `span_open` (or the first image token when None) to the first `span_close` after it (after the first
    `close_after` when set; SmolVLM's span opens and closes with the same token); with `span_close` None,
    the run of image tokens. Everything inside counts, including text tokens that the processor puts
    between tiles (SmolVLM's row newlines).
    """

    name: str
    architecture: str
    processor_class: str
    image_processor_class: str
    llm_layers: str
    vision_tower: str
    projector: tuple[str, ...]
    embed_tokens: str
    final_norm: str
    lm_head: str
    memory_prefixes: dict[str, tuple[str, ...]]
    disk_prefixes: dict[str, tuple[str, ...]]
    image_token: str
    image_token_id_field: str
    span_open: str | None = None
    span_close: str | None = None
    close_after: str | None = None


@dataclass(frozen=True)
class Family:
    """A registered family: its facts, its tiny builder and the image sizes its tests use."""

    facts: FamilyFacts
    build: Callable[..., tuple[Any, Any]]
    image_sizes: tuple[tuple[int, int], ...] = ((56, 56), (84, 56))


# --------------------------------------------------------------------------------------------------
# Builders: each returns (model, processor); the model is in eval mode with config.architectures set.

_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=4096)


def _make(cls: type, cfg: Any, seed: int, tok: PreTrainedTokenizerFast) -> Any:
    """`cls(cfg)` in eval mode with weights drawn from `seed` (the caller's torch RNG state is left as it
    was), `config.architectures` set and greedy generation ending at the tokenizer's EOS."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = cls(cfg)
    model.config.architectures = [cls.__name__]
    gen = model.generation_config
    gen.eos_token_id = tok.eos_token_id
    gen.pad_token_id = tok.pad_token_id
    gen.bos_token_id = tok.bos_token_id
    gen.do_sample = False
    return model.eval()


_QWEN_SPECIAL = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
                 "<|image_pad|>", "<|video_pad|>")
_QWEN_NAMED = {"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
               "vision_start_token": "<|vision_start|>", "vision_end_token": "<|vision_end|>"}


def _qwen_tokenizer() -> PreTrainedTokenizerFast:
    return build_tokenizer(_QWEN_SPECIAL, eos="<|im_end|>", pad="<|endoftext|>", named=_QWEN_NAMED,
                           chat_template=_chatml_template("<|vision_start|><|image_pad|><|vision_end|>"))


def _qwen_ids(tok: PreTrainedTokenizerFast) -> dict[str, int]:
    return dict(image_token_id=tok.convert_tokens_to_ids("<|image_pad|>"),
                video_token_id=tok.convert_tokens_to_ids("<|video_pad|>"),
                vision_start_token_id=tok.convert_tokens_to_ids("<|vision_start|>"),
                vision_end_token_id=tok.convert_tokens_to_ids("<|vision_end|>"))


def build_qwen2vl(seed: int = 0, initializer_range: float = 0.02) -> tuple[Any, Any]:
    """Qwen2-VL: patch 14, 2x2 merge (one token per 28x28 pixels), M-RoPE."""
    tok = _qwen_tokenizer()
    cfg = Qwen2VLConfig(
        text_config=dict(_TEXT, vocab_size=len(tok), initializer_range=initializer_range,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None),
        vision_config=dict(depth=2, embed_dim=32, hidden_size=64, num_heads=2, mlp_ratio=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, initializer_range=initializer_range),
        **_qwen_ids(tok), initializer_range=initializer_range, tie_word_embeddings=False,
    )
    model = _make(Qwen2VLForConditionalGeneration, cfg, seed, tok)
    ip = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=112 * 112, patch_size=14, temporal_patch_size=2,
                                  merge_size=2)
    return model, ImageOnlyQwen2VLProcessor(ip, tok, chat_template=tok.chat_template)


def build_qwen2_5vl(seed: int = 0, initializer_range: float = 0.02) -> tuple[Any, Any]:
    """Qwen2.5-VL: as Qwen2-VL with a windowed-attention vision tower (SwiGLU, RMSNorm)."""
    tok = _qwen_tokenizer()
    cfg = Qwen2_5_VLConfig(
        text_config=dict(_TEXT, vocab_size=len(tok), initializer_range=initializer_range,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]},
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, window_size=56, out_hidden_size=64,
                           fullatt_block_indexes=[1], initializer_range=initializer_range),
        **_qwen_ids(tok), initializer_range=initializer_range, tie_word_embeddings=False,
    )
    model = _make(Qwen2_5_VLForConditionalGeneration, cfg, seed, tok)
    ip = Qwen2VLImageProcessorPil(min_pixels=28 * 28, max_pixels=112 * 112, patch_size=14, temporal_patch_size=2,
                                  merge_size=2)
    return model, ImageOnlyQwen2_5_VLProcessor(ip, tok, chat_template=tok.chat_template)


def build_qwen3vl(seed: int = 0, initializer_range: float = 0.02) -> tuple[Any, Any]:
    """Qwen3-VL: patch 16, 2x2 merge (one token per 32x32 pixels), interleaved M-RoPE, deepstack features
    from vision blocks 0 and 1 added to the hidden states of LLM layers 0 and 1."""
    tok = _qwen_tokenizer()
    cfg = Qwen3VLConfig(
        text_config=dict(_TEXT, vocab_size=len(tok), head_dim=16, initializer_range=initializer_range,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [4, 2, 2],
                                          "mrope_interleaved": True},
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64,
                           num_position_embeddings=64, deepstack_visual_indexes=[0, 1],
                           initializer_range=initializer_range),
        **_qwen_ids(tok), initializer_range=initializer_range, tie_word_embeddings=False,
    )
    model = _make(Qwen3VLForConditionalGeneration, cfg, seed, tok)
    ip = Qwen2VLImageProcessorPil(min_pixels=32 * 32, max_pixels=128 * 128, patch_size=16, temporal_patch_size=2,
                                  merge_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return model, ImageOnlyQwen3VLProcessor(ip, tok, chat_template=tok.chat_template)



def _qwen3_5_tokenizer() -> PreTrainedTokenizerFast:
    """Qwen3.5's own tokenizer class (byte-level BPE) over a small vocabulary: the special tokens, the 256
    byte symbols and left-to-right merges spelling a few whole words.

    `AutoTokenizer` always rebuilds a `qwen3_5` checkpoint's tokenizer as `Qwen3_5Tokenizer` (transformers
    lists the model type among those with a wrong hub tokenizer class), keeping only vocab and merges; a
    WordPiece tokenizer would silently lose its pre-tokenizer there, so this one is byte-level BPE."""
    vocab = {t: i for i, t in enumerate(_QWEN_SPECIAL)}
    for c in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab.setdefault(c, len(vocab))
    merges: list[tuple[str, str]] = []
    for word in [*_WORDS, *("\u0120" + w for w in _WORDS)]:  # \u0120 is the byte-level space
        left = word[0]
        for c in word[1:]:
            if left + c not in vocab:
                merges.append((left, c))
                vocab[left + c] = len(vocab)
            left += c
    tok = Qwen3_5Tokenizer(vocab=vocab, merges=merges, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                           unk_token=None, extra_special_tokens=dict(_QWEN_NAMED))
    tok.add_special_tokens({"additional_special_tokens": list(_QWEN_SPECIAL)})
    tok.chat_template = _chatml_template("<|vision_start|><|image_pad|><|vision_end|>")
    tok.padding_side = "left"
    return tok

def build_qwen3_5(seed: int = 0, initializer_range: float = 0.02) -> tuple[Any, Any]:
    """Qwen3.5: Qwen3-VL's vision side (patch 16, 2x2 merge, no deepstack) with a hybrid LLM: layers 0 and 2
    are gated-delta-net linear attention (recurrent state, no K/V cache), layers 1 and 3 full attention.
    Without the `fla`/`causal-conv1d` packages transformers runs the linear layers in plain torch."""
    tok = _qwen3_5_tokenizer()
    cfg = Qwen3_5Config(
        text_config=dict(_TEXT, num_hidden_layers=4, vocab_size=len(tok), head_dim=32,
                         layer_types=["linear_attention", "full_attention", "linear_attention", "full_attention"],
                         linear_key_head_dim=16, linear_value_head_dim=16, linear_num_key_heads=2,
                         linear_num_value_heads=4, initializer_range=initializer_range,
                         rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                                          "mrope_section": [2, 1, 1], "mrope_interleaved": True},
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None),
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, patch_size=16,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=64,
                           num_position_embeddings=64, initializer_range=initializer_range),
        **_qwen_ids(tok), tie_word_embeddings=False,
    )
    model = _make(Qwen3_5ForConditionalGeneration, cfg, seed, tok)
    ip = Qwen2VLImageProcessorPil(min_pixels=32 * 32, max_pixels=128 * 128, patch_size=16, temporal_patch_size=2,
                                  merge_size=2, image_mean=[0.5, 0.5, 0.5], image_std=[0.5, 0.5, 0.5])
    return model, ImageOnlyQwen3VLProcessor(ip, tok, chat_template=tok.chat_template)


def build_internvl(seed: int = 0, initializer_range: float = 0.02) -> tuple[Any, Any]:
    """InternVL (HF format, Qwen2 LLM): 56x56 tiles of 14px patches, pixel shuffle 0.5 -> 4 tokens per tile;
    dynamic tiling up to 4 tiles plus a thumbnail when there is more than one tile; each image is
    `<img>` + 4 * tiles `<IMG_CONTEXT>` + `</img>`."""
    special = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<img>", "</img>", "<IMG_CONTEXT>", "<video>")
    tok = build_tokenizer(special, eos="<|im_end|>", pad="<|endoftext|>",
                          named={"start_image_token": "<img>", "end_image_token": "</img>",
                                 "context_image_token": "<IMG_CONTEXT>", "video_token": "<video>"},
                          chat_template=_chatml_template("<IMG_CONTEXT>\\n"))
    cfg = InternVLConfig(
        text_config=dict(_TEXT, model_type="qwen2", vocab_size=len(tok), initializer_range=initializer_range,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None,
                         tie_word_embeddings=False),
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=[56, 56], patch_size=[14, 14], initializer_range=initializer_range),
        image_token_id=tok.convert_tokens_to_ids("<IMG_CONTEXT>"), image_seq_length=4, downsample_ratio=0.5,
        initializer_range=initializer_range, tie_word_embeddings=False,
    )
    model = _make(InternVLForConditionalGeneration, cfg, seed, tok)
    ip = GotOcr2ImageProcessorPil(size={"height": 56, "width": 56}, crop_to_patches=True, min_patches=1,
                                  max_patches=4, image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225])
    return model, ImageOnlyInternVLProcessor(ip, tok, image_seq_length=4, chat_template=tok.chat_template)


_PINPOINTS = [[28, 28], [28, 56], [56, 28], [56, 56]]


def build_llava_onevision(seed: int = 0, initializer_range: float = 0.02) -> tuple[Any, Any]:
    """LLaVA-OneVision (SigLIP + Qwen2): 28x28 tiles of 14px patches (4 features per tile), any-resolution
    grids from 28x28 to 56x56; the image becomes base features + unpadded grid features + one newline
    feature per grid row, all carried by `<image>` tokens (the newline is a learned vector, not a token)."""
    special = ("<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>")
    tok = build_tokenizer(special, eos="<|im_end|>", pad="<|endoftext|>",
                          named={"image_token": "<image>", "video_token": "<video>"},
                          chat_template=_chatml_template("<image>\\n"))
    cfg = LlavaOnevisionConfig(
        text_config=dict(_TEXT, model_type="qwen2", vocab_size=len(tok), initializer_range=initializer_range,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=None),
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, num_hidden_layers=2,
                           num_attention_heads=2, intermediate_size=64, image_size=28, patch_size=14),
        image_token_index=tok.convert_tokens_to_ids("<image>"), video_token_index=tok.convert_tokens_to_ids("<video>"),
        vision_feature_select_strategy="full", vision_feature_layer=-1, image_grid_pinpoints=_PINPOINTS,
        vision_aspect_ratio="anyres_max_9", initializer_range=initializer_range, tie_word_embeddings=False,
    )
    model = _make(LlavaOnevisionForConditionalGeneration, cfg, seed, tok)
    ip = LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28}, image_grid_pinpoints=_PINPOINTS,
                                         do_pad=True)
    return model, ImageOnlyLlavaOnevisionProcessor(ip, tok, num_image_tokens=4, vision_feature_select_strategy="full",
                                                   chat_template=tok.chat_template, vision_aspect_ratio="anyres_max_9")


def build_gemma3(seed: int = 0, initializer_range: float = 0.02) -> tuple[Any, Any]:
    """Gemma 3: SigLIP on 32x32 images (8px patches, 4x4) average-pooled to 4 soft tokens per image; the
    LLM alternates sliding-window (8 tokens) and full attention, image tokens attend bidirectionally.
    The projection matrix, which transformers initialises to zeros, is drawn from N(0, initializer_range). The
    output head is untied from the (sqrt(hidden)-scaled) embeddings: tied, a random model only ever repeats
    its last input token, whatever the image, and no swap could change an answer."""
    special = ("<pad>", "<eos>", "<bos>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
               "<end_of_image>", "<image_soft_token>")
    template = (
        "{{ '<bos>' }}{% for message in messages %}"
        "{{ '<start_of_turn>' + ('model' if message['role'] == 'assistant' else message['role']) + '\\n' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for item in message['content'] %}"
        "{% if item['type'] == 'image' %}{{ '<start_of_image>' }}"
        "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{{ '<end_of_turn>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ '<start_of_turn>model\\n' }}{% endif %}"
    )
    tok = build_tokenizer(special, eos="<end_of_turn>", pad="<pad>", bos="<bos>",
                          named={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                 "image_token": "<image_soft_token>"}, chat_template=template)
    cfg = Gemma3Config(
        text_config=dict(_TEXT, vocab_size=len(tok), head_dim=16, query_pre_attn_scalar=16, sliding_window=8,
                         tie_word_embeddings=False,
                         layer_types=["sliding_attention", "sliding_attention", "full_attention"],
                         initializer_range=initializer_range, eos_token_id=tok.eos_token_id,
                         pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id),
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=32, patch_size=8),
        mm_tokens_per_image=4, boi_token_index=tok.convert_tokens_to_ids("<start_of_image>"),
        eoi_token_index=tok.convert_tokens_to_ids("<end_of_image>"),
        image_token_index=tok.convert_tokens_to_ids("<image_soft_token>"), initializer_range=initializer_range,
        eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
        tie_word_embeddings=False,
    )
    model = _make(Gemma3ForConditionalGeneration, cfg, seed, tok)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():  # HF initialises the projection to zeros: a random model would never see the image
        model.model.multi_modal_projector.mm_input_projection_weight.normal_(0.0, initializer_range, generator=gen)
    ip = Gemma3ImageProcessorPil(size={"height": 32, "width": 32}, do_pan_and_scan=False)
    return model, Gemma3Processor(ip, tok, chat_template=tok.chat_template, image_seq_length=4)


_SMOL_ROWCOL = tuple(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7))


def build_smolvlm(seed: int = 0, initializer_range: float = 0.02) -> tuple[Any, Any]:
    """SmolVLM (SigLIP + Llama): images resized to a 64px longest edge and split into 32x32 tiles plus a
    32x32 global image; each tile is 8px patches (4x4) pixel-shuffled by 2 -> 4 `<image>` tokens, wrapped
    in `<fake_token_around_image>` with a `<row_i_col_j>` marker (the global one: `<global-img>`)."""
    special = ("<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<fake_token_around_image>", "<image>",
               "<global-img>", *_SMOL_ROWCOL)
    template = (
        "{{ '<|im_start|>' }}{% for message in messages %}"
        "{{ message['role'] | capitalize }}{{ ':' }}"
        "{% if message['content'] is string %}{{ message['content'] }}"
        "{% else %}{% for item in message['content'] %}"
        "{% if item['type'] == 'image' %}{{ '<image>' }}"
        "{% elif item['type'] == 'text' %}{{ item['text'] }}{% endif %}"
        "{% endfor %}{% endif %}"
        "{{ '<end_of_utterance>\\n' }}{% endfor %}"
        "{% if add_generation_prompt %}{{ 'Assistant:' }}{% endif %}"
    )
    tok = build_tokenizer(special, eos="<end_of_utterance>", pad="<|endoftext|>", bos="<|im_start|>",
                          named={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                                 "global_image_token": "<global-img>", "end_of_utterance_token": "<end_of_utterance>"},
                          chat_template=template)
    cfg = SmolVLMConfig(
        text_config=dict(_TEXT, model_type="llama", vocab_size=len(tok), initializer_range=initializer_range,
                         eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id),
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
                           image_size=32, patch_size=8, initializer_range=initializer_range),
        image_token_id=tok.convert_tokens_to_ids("<image>"), scale_factor=2, initializer_range=initializer_range,
        pad_token_id=tok.pad_token_id, tie_word_embeddings=False,
    )
    model = _make(SmolVLMForConditionalGeneration, cfg, seed, tok)
    ip = SmolVLMImageProcessorPil(size={"longest_edge": 64}, max_image_size={"longest_edge": 32},
                                  do_image_splitting=True)
    return model, Idefics3Processor(ip, tok, image_seq_len=4, chat_template=tok.chat_template)


# --------------------------------------------------------------------------------------------------
# The registry

# Parameter-name prefixes per component: in memory (transformers 5.x modules) and on disk (the layout
# `save_pretrained` writes; transformers converts legacy names on load).
_LLM_MEMORY = {"llm_layers": ("model.language_model.layers.",),
               "llm_other": ("model.language_model.embed_tokens.", "model.language_model.norm.", "lm_head.")}
_LLM_LEGACY = {"llm_layers": ("language_model.model.layers.",),
               "llm_other": ("language_model.model.embed_tokens.", "language_model.model.norm.",
                             "language_model.lm_head.")}
_QWEN2_MEMORY = {"vision": ("model.visual.patch_embed.", "model.visual.blocks."),
                 "projector": ("model.visual.merger.",), **_LLM_MEMORY}
_QWEN2_DISK = {"vision": ("visual.patch_embed.", "visual.blocks."), "projector": ("visual.merger.",),
               "llm_layers": ("model.layers.",), "llm_other": ("model.embed_tokens.", "model.norm.", "lm_head.")}
_QWEN3 = {"vision": ("model.visual.patch_embed.", "model.visual.pos_embed.", "model.visual.blocks."),
          "projector": ("model.visual.merger.", "model.visual.deepstack_merger_list."), **_LLM_MEMORY}
_QWEN3_5 = {**_QWEN3, "projector": ("model.visual.merger.",)}
_TOWER_MEMORY = {"vision": ("model.vision_tower.",), "projector": ("model.multi_modal_projector.",), **_LLM_MEMORY}
_TOWER_DISK = {"vision": ("vision_tower.",), "projector": ("multi_modal_projector.",), **_LLM_LEGACY}
_SMOL = {"vision": ("model.vision_model.",), "projector": ("model.connector.",),
         "llm_layers": ("model.text_model.layers.",),
         "llm_other": ("model.text_model.embed_tokens.", "model.text_model.norm.", "lm_head.")}

_LLM = dict(llm_layers="model.language_model.layers", embed_tokens="model.language_model.embed_tokens",
            final_norm="model.language_model.norm", lm_head="lm_head")
_QWEN = dict(_LLM, vision_tower="model.visual", image_processor_class="Qwen2VLImageProcessorPil",
             image_token="<|image_pad|>", image_token_id_field="image_token_id", span_open="<|vision_start|>",
             span_close="<|vision_end|>")

FAMILIES: dict[str, Family] = {f.facts.name: f for f in (
    Family(FamilyFacts(
        "qwen2-vl", "Qwen2VLForConditionalGeneration", processor_class="ImageOnlyQwen2VLProcessor",
        projector=("model.visual.merger",), memory_prefixes=_QWEN2_MEMORY, disk_prefixes=_QWEN2_DISK, **_QWEN),
        build_qwen2vl),
    Family(FamilyFacts(
        "qwen2.5-vl", "Qwen2_5_VLForConditionalGeneration", processor_class="ImageOnlyQwen2_5_VLProcessor",
        projector=("model.visual.merger",), memory_prefixes=_QWEN2_MEMORY, disk_prefixes=_QWEN2_DISK, **_QWEN),
        build_qwen2_5vl),
    Family(FamilyFacts(
        "qwen3-vl", "Qwen3VLForConditionalGeneration", processor_class="ImageOnlyQwen3VLProcessor",
        projector=("model.visual.merger", "model.visual.deepstack_merger_list"), memory_prefixes=_QWEN3,
        disk_prefixes=_QWEN3, **_QWEN),
        build_qwen3vl, image_sizes=((64, 64), (96, 64))),
    Family(FamilyFacts(
        "internvl", "InternVLForConditionalGeneration", processor_class="ImageOnlyInternVLProcessor",
        image_processor_class="GotOcr2ImageProcessorPil", vision_tower="model.vision_tower",
        projector=("model.multi_modal_projector",), memory_prefixes=_TOWER_MEMORY, disk_prefixes=_TOWER_DISK,
        image_token="<IMG_CONTEXT>", image_token_id_field="image_token_id", span_open="<img>", span_close="</img>",
        **_LLM),
        build_internvl, image_sizes=((56, 56), (112, 56))),
    Family(FamilyFacts(
        "llava-onevision", "LlavaOnevisionForConditionalGeneration",
        processor_class="ImageOnlyLlavaOnevisionProcessor", image_processor_class="LlavaOnevisionImageProcessorPil",
        vision_tower="model.vision_tower", projector=("model.multi_modal_projector", "model.image_newline"),
        memory_prefixes={**_TOWER_MEMORY, "projector": ("model.multi_modal_projector.", "model.image_newline")},
        disk_prefixes={**_TOWER_DISK, "projector": ("multi_modal_projector.", "image_newline")},
        image_token="<image>", image_token_id_field="image_token_index", **_LLM),
        build_llava_onevision, image_sizes=((28, 28), (56, 40))),
    Family(FamilyFacts(
        "gemma3", "Gemma3ForConditionalGeneration", processor_class="Gemma3Processor",
        image_processor_class="Gemma3ImageProcessorPil", vision_tower="model.vision_tower",
        projector=("model.multi_modal_projector",), memory_prefixes=_TOWER_MEMORY, disk_prefixes=_TOWER_DISK,
        image_token="<image_soft_token>", image_token_id_field="image_token_index", span_open="<start_of_image>",
        span_close="<end_of_image>", **_LLM),
        build_gemma3, image_sizes=((32, 32), (64, 40))),
    Family(FamilyFacts(
        "smolvlm", "SmolVLMForConditionalGeneration", processor_class="Idefics3Processor",
        image_processor_class="SmolVLMImageProcessorPil", llm_layers="model.text_model.layers",
        vision_tower="model.vision_model", projector=("model.connector",),
        embed_tokens="model.text_model.embed_tokens", final_norm="model.text_model.norm", lm_head="lm_head",
        memory_prefixes=_SMOL, disk_prefixes=_SMOL, image_token="<image>", image_token_id_field="image_token_id",
        span_open="<fake_token_around_image>", span_close="<fake_token_around_image>", close_after="<global-img>"),
        build_smolvlm, image_sizes=((64, 64), (64, 32))),
    Family(FamilyFacts(
        "qwen3.5", "Qwen3_5ForConditionalGeneration", processor_class="ImageOnlyQwen3VLProcessor",
        projector=("model.visual.merger",), memory_prefixes=_QWEN3_5, disk_prefixes=_QWEN3_5, **_QWEN),
        build_qwen3_5, image_sizes=((64, 64), (96, 64))),
)}


# --------------------------------------------------------------------------------------------------
# Registry API


def family_names() -> list[str]:
    """Names of the registered families, in registration order."""
    return list(FAMILIES)


def get_family(name: str) -> Family:
    """The registered family called `name`; an unknown name lists the known ones."""
    if name not in FAMILIES:
        raise FrankenscopeError(f"unknown family {name!r}; known families: {', '.join(FAMILIES)}")
    return FAMILIES[name]


def build_tiny(name: str, *, seed: int = 0, initializer_range: float = 0.02) -> tuple[Any, Any]:
    """(model, processor) of a tiny random model of family `name`; the same seed gives the same weights."""
    fam = get_family(name)
    if not initializer_range > 0:
        raise FrankenscopeError(f"family {name}: initializer_range must be > 0, got {initializer_range}")
    return fam.build(seed=seed, initializer_range=initializer_range)


def save_tiny(name: str, out: str | Path, *, seed: int = 0, initializer_range: float = 0.02) -> Path:
    """Write a tiny random checkpoint of family `name` to `out` (which must not exist or be empty):
    config.json, generation_config.json, model.safetensors, tokenizer files, processor config and chat
    template. Returns the folder."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FrankenscopeError(f"{out}: exists and is not an empty folder; choose a new --out")
    register_auto_processors()
    model, processor = build_tiny(name, seed=seed, initializer_range=initializer_range)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "frankenscope_tiny.json").write_text(json.dumps(
        {"family": name, "seed": seed, "initializer_range": initializer_range}, indent=2) + "\n")
    return out


def load_tiny_processor(path: str | Path) -> Any:
    """`AutoProcessor.from_pretrained(path)` after `register_auto_processors()`."""
    register_auto_processors()
    return AutoProcessor.from_pretrained(str(path))



def get_module(model: Any, path: str) -> Any:
    """The submodule (or parameter) at dotted attribute `path` of `model`."""
    obj = model
    for part in path.split("."):
        if not hasattr(obj, part):
            raise FrankenscopeError(f"{type(model).__name__} has no {path!r} (missing {part!r})")
        obj = getattr(obj, part)
    return obj


def component_of(facts: FamilyFacts, name: str, *, on_disk: bool = False) -> tuple[str, int | None]:
    """(component, layer) of a parameter name: component is "vision", "projector", "llm_layers" (with the
    decoder layer index) or "llm_other"; names are in-memory (`state_dict()`) or on-disk
    (`model.safetensors`) spelling. A name matching no prefix, or prefixes of two components, is an error."""
    table = facts.disk_prefixes if on_disk else facts.memory_prefixes
    hits = [comp for comp, prefixes in table.items() if any(name.startswith(p) for p in prefixes)]
    if len(hits) != 1:
        where = "on-disk" if on_disk else "in-memory"
        raise FrankenscopeError(f"family {facts.name}: {where} parameter {name!r} matches "
                                f"{'no component' if not hits else 'components ' + ', '.join(hits)}")
    comp = hits[0]
    if comp != "llm_layers":
        return comp, None
    prefix = next(p for p in table[comp] if name.startswith(p))
    index = name[len(prefix):].split(".", 1)[0]
    if not index.isdigit():
        raise FrankenscopeError(f"family {facts.name}: parameter {name!r} has no layer index after {prefix!r}")
    return comp, int(index)

# --------------------------------------------------------------------------------------------------
# Image spans


def image_span_positions(family: str | FamilyFacts, input_ids: Sequence[int] | torch.Tensor,
                         tokenizer: Any) -> list[list[int]]:
    """The positions of each image's span in one row of `input_ids`, one list of consecutive positions
    per image, in order of appearance (`FamilyFacts` says what a family's span is).

    Raises FrankenscopeError for a batch, a family token the tokenizer lacks, or a span that is opened
    but never closed (a truncated prompt)."""
    facts = family if isinstance(family, FamilyFacts) else get_family(family).facts
    ids = input_ids.tolist() if isinstance(input_ids, torch.Tensor) else list(input_ids)
    if ids and isinstance(ids[0], list):
        raise FrankenscopeError(f"family {facts.name}: image_span_positions takes one row of input_ids, not a batch")

    def token_id(token: str | None) -> int | None:
        if token is None:
            return None
        i = tokenizer.convert_tokens_to_ids(token)
        if i is None or i == tokenizer.unk_token_id:
            raise FrankenscopeError(f"family {facts.name}: the tokenizer has no token {token!r}")
        return i

    image, open_, close, after = (token_id(t) for t in (facts.image_token, facts.span_open, facts.span_close,
                                                         facts.close_after))
    spans: list[list[int]] = []
    i, n = 0, len(ids)
    while i < n:
        if ids[i] != (image if open_ is None else open_):
            i += 1
            continue
        if close is None:  # a maximal run of image tokens
            end = i
            while end + 1 < n and ids[end + 1] == image:
                end += 1
        else:  # the first span_close after the opening token (or after close_after)
            j = i + 1
            if after is not None:
                while j < n and ids[j] != after:
                    j += 1
            while j < n and ids[j] != close:
                j += 1
            if j == n:
                raise FrankenscopeError(f"family {facts.name}: the image span opened at position {i} is never "
                                        f"closed by {facts.span_close!r} (truncated prompt?)")
            end = j
        spans.append(list(range(i, end + 1)))
        i = end + 1
    return spans
