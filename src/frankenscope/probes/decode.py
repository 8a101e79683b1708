"""Greedy decoding of a batch of prompt caches, as the swap sweep needs it.

* `BufferLayer`, `kv_buffers`, `cache_of`: a cache over preallocated key/value buffers, so a prompt pass
  can write straight into the rows of the decode cache and decoding never concatenates.
* `greedy_decode`: argmax decoding of every row, rows dropped from the batch as they reach EOS.
* `eos_token_ids`, `decode_text`: the end-of-sequence ids and ids-to-text, as HFGenerator does it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from frankenscope.errors import FrankenscopeError

# --------------------------------------------------------------------------- preallocated cache


class BufferLayer(DynamicLayer):
    """A cache layer over preallocated [batch, kv_heads, capacity, head_dim] key/value buffers.

    `update` writes the new positions in place (a DynamicLayer concatenates, copying the whole cache
    at every decoding step) and exposes views of the filled part as `keys` / `values`. The buffers may
    be row slices of larger buffers, so a prompt pass can write straight into the decode cache.
    """

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, length: int = 0) -> None:
        super().__init__()
        self._k, self._v, self._len = keys, values, length
        self.is_initialized = True
        self.device = keys.device
        self._sync()

    def _sync(self) -> None:
        self.keys, self.values = self._k[:, :, :self._len], self._v[:, :, :self._len]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        n = key_states.shape[-2]
        if self._len + n > self._k.shape[2]:
            raise FrankenscopeError(f"cache buffer of {self._k.shape[2]} positions is full")
        self._k[:, :, self._len:self._len + n] = key_states
        self._v[:, :, self._len:self._len + n] = value_states
        self._len += n
        self._sync()
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self._len

    def batch_select_indices(self, indices: torch.Tensor) -> None:
        self._k, self._v = self._k[indices], self._v[indices]
        self._sync()


def kv_buffers(cache: DynamicCache, rows: int, capacity: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Empty per-layer K/V buffers [rows, kv_heads, capacity, head_dim] with the dtype and device of each
    layer's keys in `cache` (layers may sit on different devices under a device_map)."""
    out = []
    for layer in cache.layers:
        k, v = layer.keys, layer.values
        out.append((k.new_empty((rows, k.shape[1], capacity, k.shape[3])),
                    v.new_empty((rows, v.shape[1], capacity, v.shape[3]))))
    return out


def cache_of(layers: Sequence[BufferLayer | DynamicLayer]) -> DynamicCache:
    """A DynamicCache made of the given layers (in order)."""
    cache = DynamicCache()
    cache.layers.extend(layers)
    return cache


# --------------------------------------------------------------------------- decoding


def eos_token_ids(model: nn.Module, tokenizer: Any) -> list[int]:
    """End-of-sequence ids: the generation config's, else the tokenizer's."""
    eos = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    if eos is None:
        eos = getattr(tokenizer, "eos_token_id", None)
    if eos is None:
        return []
    return [int(x) for x in (eos if isinstance(eos, (list, tuple)) else [eos])]


def greedy_decode(model: nn.Module, cache: DynamicCache, first_logits: torch.Tensor, next_position: torch.Tensor,
                  max_new_tokens: int, eos_ids: Sequence[int]) -> list[list[int]]:
    """Greedy decoding of a batch of prompt caches (all of the same length, no padding).

    Returns the generated ids per row, each ending at its first EOS (included) or after
    max_new_tokens. Rows that finished are dropped from the batch (and the cache) as they finish.
    Position ids of step t are next_position + t (for M-RoPE the text positions after the prompt
    advance together in all three rows).
    """
    n = first_logits.shape[0]
    tokens: list[list[int]] = [[] for _ in range(n)]
    active = torch.arange(n)
    eos = torch.tensor(list(eos_ids), dtype=torch.long, device=first_logits.device)
    logits = first_logits
    for step in range(max_new_tokens):
        nxt = logits.argmax(-1)
        for row, tok in zip(active.tolist(), nxt.tolist(), strict=True):
            tokens[row].append(tok)
        done = torch.isin(nxt, eos) if eos.numel() else torch.zeros_like(nxt, dtype=torch.bool)
        if step == max_new_tokens - 1 or bool(done.all()):
            break
        if bool(done.any()):
            keep = torch.nonzero(~done).flatten()
            cache.batch_select_indices(keep)
            active, nxt = active[keep.cpu()], nxt[keep]
        rows = nxt.shape[0]
        pos = next_position + step
        pos = pos.expand(*pos.shape[:-2], rows, 1) if pos.dim() == 3 else pos.expand(rows, 1)
        out = model(input_ids=nxt[:, None], position_ids=pos, cache=cache, use_cache=True)
        logits = out.logits[:, -1]
    return tokens


def decode_text(tokenizer: Any, ids: Sequence[int], eos_ids: Sequence[int]) -> str:
    """Generated ids to text: cut at the first EOS, special tokens skipped (as HFGenerator does)."""
    ids = list(ids)
    for i, t in enumerate(ids):
        if t in eos_ids:
            ids = ids[:i]
            break
    return tokenizer.decode(ids, skip_special_tokens=True)
