"""Weight-space tools: partitions, streaming reads, diffs, merges, freeze plans. Names are imported on first use."""

from frankenscope._lazy import lazy_exports

_M = "frankenscope.weights."
_EXPORTS = {
    **dict.fromkeys(("Partition", "partition", "parse_layers", "resolve_region", "REGIONS"), _M + "partition"),
    **dict.fromkeys(("CheckpointReader", "TensorEntry"), _M + "reader"),
    **dict.fromkeys(("diff", "diff_models", "diff_pair", "effective_rank", "stable_rank", "spectral_metrics"),
                    _M + "diff"),
    **dict.fromkeys(("merge", "merge_all_hybrids", "PAPER_PLANS"), _M + "merge"),
    **dict.fromkeys(("freeze_plan", "apply_freeze"), _M + "freeze"),
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
