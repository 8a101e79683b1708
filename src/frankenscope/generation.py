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
