"""Placement (device, device_map, dtype, attention implementation) and prompt styles reach every model load
and every probe of a study; config errors are caught when the file is loaded, naming the field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from frankenscope.errors import FrankenscopeError
from frankenscope.organism.model import build_organism, save_folder
from frankenscope.study.config import StudyConfig, load_config
from frankenscope.study.run import study_units


class _Loaded(Exception):
    """Raised by the recording loader: the unit got as far as loading a model."""


@pytest.fixture(scope="module")
def rl_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model, processor = build_organism("micro", seed=1)
    return save_folder(model, processor, tmp_path_factory.mktemp("org") / "rl")


def test_study_placement_reaches_every_model_load(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                  micro_dir: Path, rl_dir: Path) -> None:
    calls: list[tuple[str, dict[str, Any]]] = []

    def recording_load(path: str, **kwargs: Any) -> Any:
        calls.append((str(path), kwargs))
        raise _Loaded(str(path))

    monkeypatch.setattr("frankenscope.loading.load_model", recording_load)
    cfg = StudyConfig.model_validate({
        "name": "placement", "base": {"path": str(micro_dir)}, "in": {"path": str(micro_dir)},
        "rl": {"path": str(rl_dir)}, "dtype": "float64", "device": "cpu", "device_map": "cpu",
        "attn_implementation": "eager", "evaluation": {"n_per_task": 1}, "probes": {"n": 1},
        "freeze": {"enabled": False}})
    units = {u.name: u for u in study_units(cfg, tmp_path, log=lambda s: None)}
    for name in ("finegrained", "attention", "localize-vision", "localize-reasoning", "hybrids"):
        before = len(calls)
        with pytest.raises(_Loaded):
            units[name].run(tmp_path / name)
        assert len(calls) == before + 1, name
    for path, kwargs in calls:
        assert kwargs["dtype"] == "float64" and kwargs["device"] == "cpu" and kwargs["device_map"] == "cpu", (path, kwargs)
    attn = [kw.get("attn_implementation") for _, kw in calls]
    assert attn == ["eager"] * len(calls)  # the config's choice, and the attention probe's own need
    # the hybrids unit merged its models, then evaluated them (IN first) with the same placement
    assert calls[-1][0] == str(micro_dir) and (tmp_path / "hybrids" / "models").is_dir()


def test_probes_render_prompts_through_the_models_style(monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                                        micro_dir: Path) -> None:
    """The skip probe sees the style's user prefix and suffix and its system prompt, like evaluation."""
    import frankenscope.probes.skip as skip
    from frankenscope.probes.run import run_localize_reasoning

    seen: dict[str, Any] = {}
    real = skip.reasoning_records  # the kernel the probe runs on its items (every shard of them)

    def spy(model: Any, processor: Any, adapter: Any, items: list, **kwargs: Any) -> Any:
        seen["prompts"] = [it.prompt for it in items]
        seen["system"] = kwargs["system"]
        return real(model, processor, adapter, items, **kwargs)

    monkeypatch.setattr(skip, "reasoning_records", spy)
    style = tmp_path / "style.json"
    style.write_text('{"name": "mine", "system": "SYS", "user_prefix": "PRE\\n", "user_suffix": "\\nSUF"}')
    _, path, _ = run_localize_reasoning(str(micro_dir), tmp_path / "out", n=1, layers="0", max_new_tokens=2,
                                        prompt_style=str(style), plots=False, progress=False)
    assert seen["system"] == "SYS"
    assert seen["prompts"] and all(p.startswith("PRE\n") and p.endswith("\nSUF") for p in seen["prompts"])
    import json

    settings = json.loads(path.read_text())["settings"]
    assert settings["prompt_style"]["name"] == "mine" and settings["prompt_style"]["user_suffix"] == "\nSUF"


@pytest.mark.parametrize("field, value, message", [
    ("dtype", "float33", "dtype"),
    ("partition", "cuts:9", "partition"),
    ("attn_implementation", "fast", "attn_implementation"),
    ("evaluation", {"benchmarks": ["mathvist"]}, "benchmarks"),
    ("evaluation", {"n": 0}, "evaluation.n"),
    ("base", {"path": "x", "prompt_style": "boxd"}, "base.prompt_style"),
])
def test_config_rejects_bad_fields_at_load(tmp_path: Path, field: str, value: Any, message: str) -> None:
    import yaml

    doc = {"name": "x", "base": {"path": "a"}, "in": {"path": "b"}, "rl": {"path": "c"}, field: value}
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(FrankenscopeError, match=f"study.yaml: .*{message}"):
        load_config(path)


def test_config_style_file_relative_to_config(tmp_path: Path) -> None:
    (tmp_path / "styles").mkdir()
    (tmp_path / "styles" / "r1.json").write_text('{"system": "S", "user_suffix": "\\nThink."}')
    path = tmp_path / "study.yaml"
    path.write_text("name: x\nbase: {path: a}\nin: {path: b, prompt_style: styles/r1.json}\nrl: {path: c}\n")
    cfg = load_config(path)
    assert Path(cfg.in_.prompt_style) == (tmp_path / "styles" / "r1.json").resolve()
    assert cfg.base.prompt_style == "plain"


def test_config_dtype_names_are_the_loaders() -> None:
    from typing import get_args

    from frankenscope.loading import DTYPES
    from frankenscope.study.config import DtypeName

    assert set(get_args(DtypeName)) == set(DTYPES)
