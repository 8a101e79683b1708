"""Causal probes as context managers over forward hooks: visual-token swapping, layer skipping, attention.

* `hooks`: the context managers (capture, swap, replace hidden states, skip, attention capture).
* `swap`: visual-token swap sweeps (fast exact engine and naive oracle) and the vision localization.
* `skip`: layer-skip reasoning localization (all single-layer ablations batched, one per row).
* `attention`: attention from response tokens to image tokens, per layer, for several models.
* `plots`: Fig. 3 / 4a / 4b from the JSON results; `cli`: the typer commands.
"""

from frankenscope.probes.attention import attention_profile, attention_shift, write_attention
from frankenscope.probes.hooks import (
    capture_attention,
    capture_projections,
    count_hooks,
    forward_hooks,
    record_layer_inputs,
    replace_hidden_states,
    skip_layers,
    swap_projections,
)
from frankenscope.probes.skip import localize_reasoning, skip_generate, write_localize_reasoning
from frankenscope.probes.swap import (
    EncodedPair,
    ProbeInput,
    encode_pair,
    fast_prompt_variants,
    file_probe_inputs,
    localize_vision,
    naive_prompt_variants,
    organism_probe_inputs,
    sweep_pair,
    write_localize_vision,
)

__all__ = [
    "EncodedPair", "ProbeInput", "attention_profile", "attention_shift", "capture_attention", "capture_projections",
    "count_hooks", "encode_pair", "fast_prompt_variants", "file_probe_inputs", "forward_hooks", "localize_reasoning",
    "localize_vision", "naive_prompt_variants", "organism_probe_inputs", "record_layer_inputs",
    "replace_hidden_states", "skip_generate", "skip_layers", "swap_projections", "sweep_pair", "write_attention",
    "write_localize_reasoning", "write_localize_vision",
]
