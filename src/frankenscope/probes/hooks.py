"""Interventions as context managers over forward hooks.

Every context manager here registers PyTorch forward (pre-)hooks on modules that the adapter names,
and removes every one of them when the block ends, also when it ends with an exception. Nothing is
monkey-patched and nothing is kept at module level, so the probes work with any attention
implementation (eager, sdpa, flash) and several of them can be nested.

Conventions: a *span* is a half-open interval ``(start, end)`` of sequence positions; hidden states
have shape ``[batch, seq, hidden]``; projection outputs (``k_proj``/``v_proj``) have shape
``[batch, seq, n_kv_heads * head_dim]`` and are taken *before* RoPE.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from frankenscope.adapters import VLMAdapter
from frankenscope.errors import FrankenscopeError

Span = tuple[int, int]
#: Key and value projection outputs of one layer (pre-RoPE), each [batch, n, kv_dim].
KV = tuple[torch.Tensor, torch.Tensor]


@contextmanager
def forward_hooks(hooks: Iterable[tuple[nn.Module, Callable[..., Any]]], *, pre: bool = False,
                  with_kwargs: bool = False) -> Iterator[None]:
    """Register `(module, hook)` pairs as forward hooks (or forward pre-hooks with `pre=True`) for the block.

    The handles are removed in a `finally`, so an exception inside the block (or while registering)
    leaves the modules exactly as they were.
    """
    handles: list[Any] = []
    try:
        for module, fn in hooks:
            if pre:
                handles.append(module.register_forward_pre_hook(fn, with_kwargs=with_kwargs))
            else:
                handles.append(module.register_forward_hook(fn, with_kwargs=with_kwargs))
        yield
    finally:
        for h in handles:
            h.remove()


def count_hooks(model: nn.Module) -> int:
    """The number of forward and forward-pre hooks registered on the model's modules (0 for an untouched model)."""
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules())


def _hidden_arg(args: tuple[Any, ...], kwargs: dict[str, Any]) -> torch.Tensor:
    """The hidden states a decoder layer was called with (first positional argument or `hidden_states=`)."""
    if args:
        return args[0]
    if "hidden_states" in kwargs:
        return kwargs["hidden_states"]
    raise FrankenscopeError("decoder layer called without hidden states (neither positionally nor as hidden_states=)")


def _with_hidden(args: tuple[Any, ...], kwargs: dict[str, Any], hidden: torch.Tensor) -> tuple[tuple, dict]:
    if args:
        return (hidden, *args[1:]), kwargs
    return args, {**kwargs, "hidden_states": hidden}


def _check_layers(adapter: VLMAdapter, model: nn.Module, layers: Iterable[int]) -> list[int]:
    n = adapter.num_layers(model)
    out = sorted(set(int(x) for x in layers))
    bad = [x for x in out if not 0 <= x < n]
    if bad:
        raise FrankenscopeError(f"LLM layer(s) {bad} do not exist: the model has layers 0..{n - 1}")
    return out


# --------------------------------------------------------------------------- capture


@contextmanager
def capture_projections(model: nn.Module, adapter: VLMAdapter, layers: Iterable[int],
                        span: Span | None = None) -> Iterator[dict[int, KV]]:
    """Record the key and value projection outputs (pre-RoPE) of `layers` at the positions `span`.

    Yields a dict filled during the block: layer -> (k, v), detached copies of shape
    [batch, span length, kv_dim]. Use it around one forward pass (a later call overwrites an earlier one).
    """
    store: dict[int, list[torch.Tensor | None]] = {}
    out: dict[int, KV] = {}

    def make(layer: int, which: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> None:
            sl = output if span is None else output[:, span[0]:span[1]]
            store.setdefault(layer, [None, None])[which] = sl.detach().clone()
            k, v = store[layer]
            if k is not None and v is not None:
                out[layer] = (k, v)
        return hook

    hooks = []
    for j in _check_layers(adapter, model, layers):
        proj = adapter.attention_projections(model, j)
        hooks += [(proj.k, make(j, 0)), (proj.v, make(j, 1))]
    with forward_hooks(hooks):
        yield out


@dataclass
class LayerInputs:
    """What `record_layer_inputs` saw: per layer, the input hidden states (sliced) and the call's keyword arguments."""

    hidden: dict[int, torch.Tensor] = field(default_factory=dict)
    kwargs: dict[int, dict[str, Any]] = field(default_factory=dict)


@contextmanager
def record_layer_inputs(model: nn.Module, adapter: VLMAdapter, layers: Iterable[int],
                        positions: slice | None = None, keep_kwargs: Iterable[int] = ()) -> Iterator[LayerInputs]:
    """Record each decoder layer's input hidden states (at `positions` along the sequence) during the block.

    keep_kwargs: layers whose call keyword arguments (e.g. `position_embeddings`, the attention mask)
    are kept too, by reference. The hidden states are detached copies.
    """
    rec = LayerInputs()
    keep = set(keep_kwargs)

    def make(layer: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            h = _hidden_arg(args, kwargs)
            rec.hidden[layer] = (h if positions is None else h[:, positions]).detach().clone()
            if layer in keep:
                rec.kwargs[layer] = dict(kwargs)
        return hook

    layer_list = adapter.decoder_layers(model)
    wanted = _check_layers(adapter, model, [*layers, *keep])
    with forward_hooks([(layer_list[j], make(j)) for j in wanted], pre=True, with_kwargs=True):
        yield rec


@contextmanager
def record_layer_outputs(model: nn.Module, adapter: VLMAdapter, layers: Iterable[int],
                         positions: slice | None = None) -> Iterator[dict[int, torch.Tensor]]:
    """Record each decoder layer's output hidden states (at `positions` along the sequence) during the block.

    Yields a dict filled during the block: layer -> detached copy [batch, positions, hidden]. With
    `record_layer_inputs` it shows what a model adds between one layer's output and the next layer's input."""
    out: dict[int, torch.Tensor] = {}

    def make(layer: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            h = output[0] if isinstance(output, tuple) else output
            out[layer] = (h if positions is None else h[:, positions]).detach().clone()
        return hook

    layer_list = adapter.decoder_layers(model)
    with forward_hooks([(layer_list[j], make(j)) for j in _check_layers(adapter, model, layers)]):
        yield out


@contextmanager
def capture_attention(model: nn.Module, adapter: VLMAdapter, layers: Iterable[int],
                      reducer: Callable[[int, torch.Tensor], None]) -> Iterator[None]:
    """Call `reducer(layer, weights)` with each attention module's weights [batch, heads, q_len, kv_len].

    The weights exist only with eager attention (load the model with attn_implementation="eager");
    under sdpa/flash the module returns None and this raises FrankenscopeError. Reduce inside
    `reducer` (keep only what you need) so that at most one layer's full weights are alive at a time.
    """
    def make(layer: int) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: Any) -> None:
            weights = output[1] if isinstance(output, tuple) and len(output) > 1 else None
            if weights is None:
                raise FrankenscopeError(
                    f"layer {layer}: the attention module returned no weights; load the model with "
                    "attn_implementation='eager' to measure attention")
            reducer(layer, weights)
        return hook

    with forward_hooks([(adapter.attention(model, j), make(j)) for j in _check_layers(adapter, model, layers)]):
        yield


# --------------------------------------------------------------------------- interventions


@contextmanager
def swap_projections(model: nn.Module, adapter: VLMAdapter, source: Mapping[int, KV], span: Span,
                     layers: Iterable[int], prompt_len: int,
                     rows: Mapping[int, Sequence[int]] | None = None) -> Iterator[None]:
    """Visual-token K/V swap: in `layers`, the key and value projections at `span` become `source`'s.

    source: layer -> (k, v) pre-RoPE projection outputs of shape [1 or batch, span length, kv_dim]
        (from `capture_projections` on the source run). Because source and target share the prompt
        and the image grid, their RoPE phases are equal, so swapping pre-RoPE projections equals
        swapping the cached post-RoPE keys and values.
    prompt_len: the hook acts only on calls whose sequence length equals it, i.e. on the prompt
        (prefill) pass; decoding steps inside the block are left alone, so the swap is never
        re-applied at decode time (the reference code's bug).
    rows: optional layer -> batch rows to modify (default: every row).
    """
    i0, i1 = span
    wanted = _check_layers(adapter, model, layers)
    missing = [j for j in wanted if j not in source]
    if missing:
        raise FrankenscopeError(f"no source keys/values captured for layer(s) {missing}")

    def make(layer: int, which: int) -> Callable[..., torch.Tensor | None]:
        def hook(module: nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor | None:
            if output.shape[1] != prompt_len:
                return None
            src = source[layer][which].to(device=output.device, dtype=output.dtype)
            if src.shape[1] != i1 - i0:
                raise FrankenscopeError(f"layer {layer}: source span has {src.shape[1]} positions, "
                                        f"the target's image span {i1 - i0}")
            out = output.clone()
            sel = None if rows is None else rows.get(layer)
            if sel is None:
                out[:, i0:i1] = src
            else:
                idx = torch.as_tensor(list(sel), dtype=torch.long, device=output.device)
                out[idx, i0:i1] = src if src.shape[0] == 1 else src[idx]
            return out
        return hook

    hooks = []
    for j in wanted:
        proj = adapter.attention_projections(model, j)
        hooks += [(proj.k, make(j, 0)), (proj.v, make(j, 1))]
    with forward_hooks(hooks):
        yield


@contextmanager
def replace_hidden_states(model: nn.Module, adapter: VLMAdapter, layer: int, span: Span,
                          values: torch.Tensor, prompt_len: int) -> Iterator[None]:
    """Replace the hidden states at `span` at the *input* of decoder layer `layer` by `values`.

    This is the paper's own wording of the swap (hidden states of the visual tokens at one layer).
    With causal attention and identical text before the image it equals the cumulative K/V swap
    from `layer` on (with causal attention and the same text before the image, image-token states depend only on that prefix and the image). Acts only on the prompt pass (sequence length == prompt_len).
    """
    i0, i1 = span
    target = adapter.decoder_layers(model)[_check_layers(adapter, model, [layer])[0]]

    def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple | None:
        h = _hidden_arg(args, kwargs)
        if h.shape[1] != prompt_len:
            return None
        h = h.clone()
        h[:, i0:i1] = values.to(device=h.device, dtype=h.dtype)
        return _with_hidden(args, kwargs, h)

    with forward_hooks([(target, hook)], pre=True, with_kwargs=True):
        yield


@contextmanager
def skip_layers(model: nn.Module, adapter: VLMAdapter,
                gates: Mapping[int, bool | torch.Tensor] | Iterable[int]) -> Iterator[None]:
    """Skip decoder layers: a skipped layer returns its input (attention and MLP removed, residual kept).

    gates: an iterable of layers (skipped for every batch row), or layer -> gate where the gate is
        True (every row) or a bool tensor [batch] choosing the rows that skip that layer, so that one
        batch can hold one ablation per row. The layer still runs (and writes its K/V to a cache,
        which only that layer would read); its output is replaced.
    """
    gate_map: dict[int, bool | torch.Tensor] = (dict(gates) if isinstance(gates, Mapping)
                                                 else {int(j): True for j in gates})
    _check_layers(adapter, model, gate_map)
    layer_list = adapter.decoder_layers(model)

    def make(layer: int) -> Callable[..., Any]:
        gate = gate_map[layer]

        def hook(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any) -> Any:
            h_in = _hidden_arg(args, kwargs)
            h_out = output[0] if isinstance(output, tuple) else output
            if isinstance(gate, torch.Tensor):
                g = gate.to(h_out.device).view(-1, *([1] * (h_out.dim() - 1)))
                if g.shape[0] != h_out.shape[0]:
                    raise FrankenscopeError(f"layer {layer}: skip gate has {g.shape[0]} rows, the batch "
                                            f"{h_out.shape[0]}")
                new = torch.where(g, h_in, h_out)
            elif gate:
                new = h_in
            else:
                return None
            return (new, *output[1:]) if isinstance(output, tuple) else new
        return hook

    with forward_hooks([(layer_list[j], make(j)) for j in gate_map], with_kwargs=True):
        yield
