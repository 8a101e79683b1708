"""Studies: one config -> every analysis for a Base -> IN -> RL triple -> one report. Names are imported on
first use."""

from frankenscope._lazy import lazy_exports

_M = "frankenscope.study."
_EXPORTS = {
    **dict.fromkeys(("StudyConfig", "load_config"), _M + "config"),
    **dict.fromkeys(("run_study", "study_units"), _M + "run"),
    "write_report": _M + "report",
}
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
__all__ = sorted(_EXPORTS)
