"""Causal probes as context managers over forward hooks: visual-token swapping, layer skipping, attention.

* `hooks`: the context managers (capture, swap, replace hidden states, skip, attention capture).
* `swap`: visual-token swap sweeps (fast exact engine and naive oracle) and the vision localization.
* `skip`: layer-skip reasoning localization (all single-layer ablations batched, one per row).
* `attention`: attention from response tokens to image tokens, per layer, for several models.
* `run`: each probe end to end (data, model, result file, figure), for the CLI and the study;
  `plots`: Fig. 3 / 4a / 4b from the JSON results; `cli`: the typer commands.

Names are imported on first use.
"""

from frankenscope._lazy import lazy_exports

_M = "frankenscope.probes."
_EXPORTS = {
    **dict.fromkeys(("attention_profile", "attention_shift", "write_attention"), _M + "attention"),
    **dict.fromkeys(("capture_attention", "capture_projections", "count_hooks", "forward_hooks",
                     "record_layer_inputs", "replace_hidden_states", "skip_layers", "swap_projections"),
                    _M + "hooks"),
    **dict.fromkeys(("localize_reasoning", "skip_generate", "write_localize_reasoning"), _M + "skip"),
    **dict.fromkeys(("EncodedPair", "ProbeInput", "encode_pair", "fast_prompt_variants", "file_probe_inputs",
                     "localize_vision", "naive_prompt_variants", "sweep_pair",
                     "write_localize_vision"), _M + "swap"),
    **dict.fromkeys(("run_attention", "run_localize_reasoning", "run_localize_vision"), _M + "run"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
