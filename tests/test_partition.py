import pytest

from frankenscope.errors import FrankenscopeError
from frankenscope.weights.partition import parse_layers, partition, resolve_region


def test_thirds_matches_reference_cuts():
    p = partition(28)
    assert p["early"] == list(range(0, 9)) and p["mid"] == list(range(9, 18)) and p["late"] == list(range(18, 28))
    assert partition(6) == {"early": [0, 1], "mid": [2, 3], "late": [4, 5]}
    assert partition(4) == {"early": [0], "mid": [1], "late": [2, 3]}


def test_equivalent_forms_agree():
    a = partition(28, "8,12,8")
    assert a == partition(28, "sizes:8,12,8") == partition(28, "cuts:8,20")
    assert a == partition(28, "early=0-7;mid=8-19;late=20-27")


@pytest.mark.parametrize("spec,msg", [
    ("8,12,9", "add up"), ("0,14,14", "positive"), ("cuts:9", "two"), ("cuts:18,9", "cuts"),
    ("early=0-9;mid=9-18;late=19-27", "both"), ("early=0-8;mid=10-18;late=19-27", r"\[9\]"),
    ("early=0-8;mid=9-17", "missing"), ("early=0-8;middle=9-17;late=18-27", "middle"),
    ("early=0-8;mid=9-17;late=18-28", "28"), ("banana", "not understood"),
])
def test_bad_partitions_rejected(spec, msg):
    with pytest.raises(FrankenscopeError, match=msg):
        partition(28, spec)


def test_regions_and_layer_lists():
    assert resolve_region("late", 6) == [4, 5]
    assert resolve_region("mid+late", 6) == [2, 3, 4, 5]
    assert resolve_region("0,2-3", 6) == [0, 2, 3]
    with pytest.raises(FrankenscopeError, match="layer 6"):
        parse_layers("5-6", 6)
    with pytest.raises(FrankenscopeError, match="sideways"):
        resolve_region("sideways", 6)


# --------------------------------------------------------------------------- the parsed Partition object

from frankenscope.weights.partition import Partition  # noqa: E402


@pytest.mark.parametrize("spec,msg", [
    ("cuts:9", "two"), ("cuts:18,9", "cuts"), ("0,14,14", "positive"), ("1,2", "3 region sizes"),
    ("early=0-8;mid=9-17", "missing"), ("early=0-8;middle=9-17;late=18-27", "middle"),
    ("early=0-8;early=9-17;late=18-27", "twice"), ("early=a-b;mid=1;late=2", "layers 'a-b'"), ("banana", "not understood"),
])
def test_syntax_errors_are_raised_by_parse_before_any_model_is_known(spec, msg):
    with pytest.raises(FrankenscopeError, match=msg):
        Partition.parse(spec)


def test_depth_errors_wait_for_the_model_and_parse_is_idempotent():
    p = Partition.parse("8,12,9")  # fine as text; wrong for 28 layers
    assert (p.kind, p.values, str(p)) == ("sizes", (8, 12, 9), "8,12,9")
    assert Partition.parse(p) is p
    assert p.regions(29) == partition(29, "cuts:8,20")
    with pytest.raises(FrankenscopeError, match="add up to the 28"):
        p.regions(28)
    r = Partition.parse("early=0-1; mid=2-3; late=4-5")
    assert r.ranges == (("early", "0-1"), ("mid", "2-3"), ("late", "4-5")) and str(r) == "early=0-1; mid=2-3; late=4-5"
    assert r.layers("mid+late", 6) == [2, 3, 4, 5] and r.layers("0,5", 6) == [0, 5]
    with pytest.raises(FrankenscopeError, match=r"layers \[6\] belong to no region"):
        r.regions(7)


def test_study_config_parses_the_partition_once_on_load(tmp_path):
    from frankenscope.study.config import StudyConfig

    models = {k: {"path": str(tmp_path / k)} for k in ("base", "in", "rl")}
    cfg = StudyConfig.model_validate({"name": "t", **models, "partition": "cuts:2,4"})
    assert cfg.partition == "cuts:2,4" and cfg.partition_parsed == Partition("cuts:2,4", "cuts", (2, 4))
    with pytest.raises(ValueError, match="cuts must satisfy"):
        StudyConfig.model_validate({"name": "t", **models, "partition": "cuts:4,2"})
