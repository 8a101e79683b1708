"""The organism's processor: Qwen2.5-VL's processor without the video processor.

The stock `Qwen2_5_VLProcessor` requires a video processor, which needs torchvision; this subclass
keeps the image path (the PIL image processor) and the tokenizer only.
"""

from __future__ import annotations

from transformers import Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil
from transformers.processing_utils import ProcessorMixin

from frankenscope.organism.tasks import IMAGE_SIZE
from frankenscope.organism.tokenizer import CHAT_TEMPLATE, build_tokenizer


class OrganismProcessor(Qwen2_5_VLProcessor):
    """Tokenizer + PIL image processor; `from_pretrained` on a saved folder restores it."""

    attributes = ["image_processor", "tokenizer"]

    def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kwargs):
        self.image_token = getattr(tokenizer, "image_token", None) or "<|image_pad|>"
        self.video_token = getattr(tokenizer, "video_token", None) or "<|video_pad|>"
        self.image_token_id = tokenizer.convert_tokens_to_ids(self.image_token)
        self.video_token_id = tokenizer.convert_tokens_to_ids(self.video_token)
        ProcessorMixin.__init__(self, image_processor, tokenizer, chat_template=chat_template)

    def __call__(self, images=None, text=None, **kwargs):
        """As Qwen2.5-VL's processor, but a batch may mix prompts with and without an image:
        nested per-prompt image lists are flattened and None entries dropped (TRL's GRPO passes
        [[img], None, ...] for mixed batches)."""
        if isinstance(images, (list, tuple)):
            flat = []
            for entry in images:
                if isinstance(entry, (list, tuple)):
                    flat.extend(x for x in entry if x is not None)
                elif entry is not None:
                    flat.append(entry)
            images = flat or None
        return super().__call__(images=images, text=text, **kwargs)


def build_processor(max_side: int = 224) -> OrganismProcessor:
    """Processor for images between 112x112 and max_side x max_side pixels (patch 14, merge 2)."""
    ip = Qwen2VLImageProcessorPil(min_pixels=IMAGE_SIZE * IMAGE_SIZE, max_pixels=max_side * max_side,
                                  patch_size=14, temporal_patch_size=2, merge_size=2)
    return OrganismProcessor(image_processor=ip, tokenizer=build_tokenizer(), chat_template=CHAT_TEMPLATE)
