"""Causal probes as context managers over forward hooks: visual-token swapping, layer skipping, attention.

* `hooks`: the context managers (capture, swap, replace hidden states, skip, attention capture).
* `swap`: visual-token swapping: pair encoding, one pair's sweep, scoring and the vision localization;
  `sweep`: its two prompt-pass engines (fast exact sweep and naive oracle); `decode`: greedy decoding of
  their batched caches over preallocated buffers.
* `skip`: layer-skip reasoning localization (all single-layer ablations batched, one per row).
* `attention`: attention from response tokens to image tokens, per layer, for several models.
* `run`: each probe end to end (data, model, result file, figure), for the CLI and the study, prepared as a
  probe that runs whole or in shards of its items (`shards`: planning, shard record files, the merge);
  `results`: the result-file writing the three probes share; `plots`: Fig. 3 / 4a / 4b from the JSON
  results; `cli`: the typer commands.

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
    **dict.fromkeys(("ProbeInput", "encode_pair", "file_probe_inputs", "localize_vision", "sweep_pair",
                     "write_localize_vision"), _M + "swap"),
    **dict.fromkeys(("EncodedPair", "fast_prompt_variants", "naive_prompt_variants"), _M + "sweep"),
    **dict.fromkeys(("eos_token_ids", "greedy_decode"), _M + "decode"),
    **dict.fromkeys(("run_attention", "run_localize_reasoning", "run_localize_vision"), _M + "run"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
