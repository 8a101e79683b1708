"""The organism's processor: Qwen2.5-VL's processor without the video processor.

The stock `Qwen2_5_VLProcessor` requires a video processor, which needs torchvision; this subclass
keeps the image path (the PIL image processor) and the tokenizer only.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
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

    def fast_image_inputs(self, image: Image.Image) -> dict[str, torch.Tensor] | None:
        """`pixel_values` and `image_grid_thw` of one image, bit-identical to the image processor's, in
        one vectorised pass (the processor's per-image path is half of an SFT example's encoding).

        Applies when nothing is resized (H and W multiples of patch * merge, H * W within the pixel
        bounds: true of every organism image) and the image is RGB or greyscale; None otherwise
        (callers then use the processor). Per pixel, as the processor computes it:
        x = float32(float64(u8) * rescale_factor), then (x - mean) / std in float32; then the patches
        in Qwen2-VL's order (2 x 2 merge groups of P x P patches, each flattened as C x T x P x P
        with the frame repeated over the T temporal slots).
        """
        ip = self.image_processor
        p, m, t = ip.patch_size, ip.merge_size, ip.temporal_patch_size
        w, h = image.size
        plain = ip.do_resize and ip.do_rescale and ip.do_normalize and ip.do_convert_rgb
        fits = h % (p * m) == 0 and w % (p * m) == 0 and ip.size.shortest_edge <= h * w <= ip.size.longest_edge
        if image.mode not in ("RGB", "L") or not plain or not fits:
            return None
        x = (np.asarray(image.convert("RGB")).astype(np.float64) * ip.rescale_factor).astype(np.float32)
        x = (x - np.array(ip.image_mean, dtype=np.float32)) / np.array(ip.image_std, dtype=np.float32)  # H, W, C
        gh, gw = h // p, w // p
        x = x.reshape(gh // m, m, p, gw // m, m, p, 3).transpose(0, 3, 1, 4, 6, 2, 5)  # gh/m, gw/m, m, m, C, P, P
        x = np.broadcast_to(x[:, :, :, :, :, None], (*x.shape[:5], t, p, p)).reshape(gh * gw, 3 * t * p * p)
        return {"pixel_values": torch.from_numpy(np.ascontiguousarray(x)),
                "image_grid_thw": torch.tensor([[1, gh, gw]], dtype=torch.int64)}

    def fast_call(self, text: str, image: Image.Image) -> dict[str, torch.Tensor] | None:
        """`self(text=[text], images=[image], return_tensors="pt")`'s input_ids, mm_token_type_ids,
        pixel_values and image_grid_thw, bit-identical, without the processor's per-call overhead; None
        when `fast_image_inputs` does not apply or `text` has not exactly one image placeholder.

        As the processor does, the placeholder is expanded to grid_t * grid_h * grid_w / merge^2 image
        tokens before tokenizing; mm_token_type_ids is 1 on image tokens, 0 elsewhere.
        """
        vision = self.fast_image_inputs(image)
        if vision is None or text.count(self.image_token) != 1:
            return None
        n_tok = int(vision["image_grid_thw"].prod()) // self.image_processor.merge_size ** 2
        ids = torch.tensor(self.tokenizer(text.replace(self.image_token, self.image_token * n_tok))["input_ids"])
        return {"input_ids": ids[None], "mm_token_type_ids": (ids == self.image_token_id).long()[None], **vision}


def build_processor(max_side: int = 224) -> OrganismProcessor:
    """Processor for images between 112x112 and max_side x max_side pixels (patch 14, merge 2)."""
    ip = Qwen2VLImageProcessorPil(min_pixels=IMAGE_SIZE * IMAGE_SIZE, max_pixels=max_side * max_side,
                                  patch_size=14, temporal_patch_size=2, merge_size=2)
    return OrganismProcessor(image_processor=ip, tokenizer=build_tokenizer(), chat_template=CHAT_TEMPLATE)
