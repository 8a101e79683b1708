"""Helpers every generating analysis shares: the model's device, the pad id, left padding, image loading.

One place for each, so evaluation (`evaluate/runner.py`) and the probes (`probes/swap.py`, `skip.py`,
`attention.py`) batch and decode the same way.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch

from frankenscope.data.io import load_image  # noqa: F401 - re-exported: one image reader for every analysis
from frankenscope.errors import FrankenscopeError


def model_device(model: Any) -> torch.device:
    """Where the model's inputs go: `model.device`, else the device of its first parameter."""
    dev = getattr(model, "device", None)
    return dev if isinstance(dev, torch.device) else next(model.parameters()).device


def pad_token_id(model: Any, tokenizer: Any) -> int:
    """The pad id for batched generation: the tokenizer's pad token, else the generation config's pad token,
    else its (first) eos token; an error when none is defined."""
    pad = tokenizer.pad_token_id
    if pad is None:
        pad = model.generation_config.pad_token_id
    if pad is None:
        eos = model.generation_config.eos_token_id
        pad = eos[0] if isinstance(eos, (list, tuple)) else eos
    if pad is None:
        raise FrankenscopeError("neither the tokenizer nor the generation config define a pad or eos token")
    return int(pad)


@contextmanager
def left_padding(tokenizer: Any) -> Iterator[None]:
    """Pad on the left inside the block (every row's last prompt token at the end, as generation needs);
    the tokenizer's own setting is restored afterwards."""
    old = tokenizer.padding_side
    tokenizer.padding_side = "left"
    try:
        yield
    finally:
        tokenizer.padding_side = old


#: PIL modes that have a defined RGB rendering (converted); any other mode (16-bit or float single channel:
#: "I", "I;16", "F", ...) has no colour meaning a VLM processor could use and is refused.
RGB_CONVERTIBLE_MODES = frozenset({"RGB", "RGBA", "RGBX", "L", "LA", "La", "P", "PA", "1", "CMYK", "YCbCr", "LAB",
                                   "HSV"})


def rgb_image(image: Any, where: str) -> Any:
    """`image` as an RGB PIL image; FrankenscopeError naming `where` (a pair or item) for a non-image or a mode
    without an RGB rendering (`RGB_CONVERTIBLE_MODES`)."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise FrankenscopeError(f"{where}: expected a PIL image, got {type(image).__name__}")
    if image.mode == "RGB":
        return image
    if image.mode not in RGB_CONVERTIBLE_MODES:
        raise FrankenscopeError(f"{where}: image mode {image.mode!r} is not supported (it has no RGB rendering); "
                                f"supported modes: {', '.join(sorted(RGB_CONVERTIBLE_MODES))}")
    return image.convert("RGB")
