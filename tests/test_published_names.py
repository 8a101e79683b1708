"""Parameter names read from published checkpoints' model.safetensors.index.json files
(tests/fixtures/published_names/*.json; where each came from is in its "repo", "commit", "path" and "note") are
understood by the adapter of their architecture: each maps to one (component, layer), and its in-memory spelling
(`canonical_name`) is a real parameter of the family's tiny model once its block indices are brought into the
tiny model's range.

The expected component of a name is worked out here from the name itself (`_expected`), independently of the
adapters' name rules, and cross-checked against the families' prefix tables (`component_of`)."""

from __future__ import annotations

import functools
import json
import re
from pathlib import Path
from typing import Any

import pytest
from torch import nn

from frankenscope.adapters import get_adapter
from frankenscope.testing.families import FAMILIES, build_tiny, component_of

FIXTURES = Path(__file__).parent / "fixtures" / "published_names"
PATHS = sorted(FIXTURES.glob("*.json"))
KEYS = {"repo", "commit", "path", "architecture", "note", "names"}
_FAMILY_OF = {fam.facts.architecture: name for name, fam in FAMILIES.items()}
#: (component, layer) from the families' prefix tables -> the adapter's components.
_FACTS_COMPONENT = {"vision": {"vision"}, "projector": {"projector"}, "llm_layers": {"llm"},
                    "llm_other": {"embed", "final_norm", "lm_head"}}


def _load(path: Path) -> dict[str, Any]:
    return json.loads(path.read_text())


def _some(bad: dict[str, Any], n: int = 5) -> str:
    """The first `n` entries of a failure dict and how many there are in all."""
    return f"{len(bad)} names, e.g. {dict(list(bad.items())[:n])}"


def _expected(name: str) -> tuple[str, int | None]:
    """(component, layer) of a published name, from its own segments."""
    if re.search(r"(?:^|\.)(?:visual|vision_tower|vision_model)\.", name):
        if re.search(r"\.(?:merger|deepstack_merger_list)\.", name):
            return "projector", None
        m = re.search(r"\.(?:blocks|layers|layer)\.(\d+)\.", name)
        return "vision", int(m.group(1)) if m else None
    if re.search(r"(?:^|\.)(?:multi_modal_projector|connector)\.|(?:^|\.)image_newline$", name):
        return "projector", None
    if re.search(r"(?:^|\.)lm_head\.", name):
        return "lm_head", None
    if ".embed_tokens." in name:
        return "embed", None
    m = re.search(r"\.layers\.(\d+)\.", name)
    if m:
        return "llm", int(m.group(1))
    if re.search(r"\.norm\.(?:weight|bias)$", name):
        return "final_norm", None
    raise AssertionError(f"{name}: no expected component (extend _expected)")


@functools.cache
def _tiny(family: str) -> nn.Module:
    return build_tiny(family)[0]


def _into_tiny_range(model: nn.Module, name: str) -> str:
    """`name` with every index into a ModuleList of `model` clamped to that list's last entry (a published
    model's layer 35 or deepstack merger 2 becomes the tiny model's last one)."""
    obj: Any = model
    out = []
    for part in name.split("."):
        if isinstance(obj, nn.ModuleList) and part.isdigit():
            part = str(min(int(part), len(obj) - 1))
        out.append(part)
        obj = getattr(obj, part, None)
    return ".".join(out)


def test_fixtures_are_well_formed():
    assert PATHS, "no published-name fixtures"
    for path in PATHS:
        d = _load(path)
        assert set(d) == KEYS, path.name
        assert re.fullmatch(r"[0-9a-f]{40}", d["commit"]), path.name
        assert d["path"].endswith("model.safetensors.index.json"), path.name
        assert d["architecture"] in _FAMILY_OF, f"{path.name}: {d['architecture']} has no tiny family"
        assert len(d["names"]) == len(set(d["names"])), f"{path.name}: duplicate names"
        assert path.name.startswith(_FAMILY_OF[d["architecture"]] + "__"), f"{path.name}: <family>__<owner>__<repo>"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_published_names_map_to_their_component_and_layer(path):
    d = _load(path)
    ad = get_adapter(d["architecture"])
    wrong = {}
    for name in d["names"]:
        loc = ad.param_location(name)
        if (loc.component, loc.layer) != _expected(name):
            wrong[name] = ((loc.component, loc.layer), _expected(name))
    assert not wrong, f"{path.name}: (adapter, expected) differ for {_some(wrong)}"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_published_names_resolve_to_tiny_model_parameters(path):
    d = _load(path)
    ad = get_adapter(d["architecture"])
    family = _FAMILY_OF[d["architecture"]]
    model = _tiny(family)
    params = dict(model.named_parameters())
    facts = FAMILIES[family].facts
    missing, disagree = {}, {}
    for name in d["names"]:
        memory = ad.canonical_name(name)
        tiny_name = _into_tiny_range(model, memory)
        if tiny_name not in params:
            missing[name] = tiny_name
            continue
        loc = ad.param_location(name)
        # the in-memory name resolves to the same place, and the families' prefix table agrees
        assert ad.param_location(memory) == loc, name
        comp, layer = component_of(facts, memory)
        if loc.component not in _FACTS_COMPONENT[comp] or (comp == "llm_layers" and layer != loc.layer):
            disagree[name] = (comp, layer, loc)
    assert not missing, f"{path.name}: not parameters of the tiny {family} model: {_some(missing)}"
    assert not disagree, f"{path.name}: adapter and FamilyFacts prefixes disagree for {_some(disagree)}"


@pytest.mark.parametrize("path", PATHS, ids=[p.stem for p in PATHS])
def test_published_names_cover_every_component(path):
    """Each fixture holds names of every component its family has on disk (a fixture that lost, say, its
    projector names would silently test less)."""
    d = _load(path)
    ad = get_adapter(d["architecture"])
    seen = {ad.param_location(n).component for n in d["names"]}
    need = {"vision", "projector", "embed", "llm", "final_norm"}
    assert need <= seen, f"{path.name}: no names of {sorted(need - seen)}"
