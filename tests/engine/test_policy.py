"""Policy grammar (docs/policy.md): profiles, lists, normalisation, errors."""
import pytest

from netoffload.engine.features import FEATURES
from netoffload.engine.policy import PROFILES, Policy, normalise_value, parse_policy
from netoffload.errors import BadArgument

ALL_OFF = dict((f, "off") for f in FEATURES)

VALID = [
    ("all-off", "all-off", ALL_OFF),
    ("tx-off", "tx-off", {"tx": "off"}),
    ("none", "none", {}),
    ("  All-Off ", "all-off", ALL_OFF),
    ("tx=off,sg=off", "tx=off,sg=off", {"tx": "off", "sg": "off"}),
    ("sg=off,tx=off", "tx=off,sg=off", {"tx": "off", "sg": "off"}),
    (" tx = false , gro=TRUE ", "tx=off,gro=on", {"tx": "off", "gro": "on"}),
    ("lro=on", "lro=on", {"lro": "on"}),
    ("tx=off,tx=false", "tx=off", {"tx": "off"}),
    ("rx=on,tx=on,sg=on,tso=on,ufo=on,gso=on,gro=on,lro=on",
     "rx=on,tx=on,sg=on,tso=on,ufo=on,gso=on,gro=on,lro=on",
     dict((f, "on") for f in FEATURES)),
]


@pytest.mark.parametrize("text,canonical,features", VALID,
                         ids=[v[0].strip() or "blank" for v in VALID])
def test_valid_policies(text, canonical, features):
    policy = parse_policy(text)
    assert policy.features == features
    assert policy.text == canonical
    assert str(policy) == canonical
    assert policy.is_none == (features == {})
    # The canonical text parses back to the same policy.
    assert parse_policy(policy.text) == policy


# (text, words the error message must contain)
INVALID = [
    ("", ["empty policy", "all-off", "tx-off", "none"]),
    ("   ", ["empty policy"]),
    ("alloff", ["'alloff'", "all-off", "tx-off", "none"]),
    ("tx=maybe", ["'maybe'", "on, off, true, false"]),
    ("txcsum=off", ["'txcsum'", "rx, tx, sg, tso, ufo, gso, gro, lro"]),
    ("tx=off,tx=on", ["'tx'", "twice"]),
    ("tx=off,,sg=off", ["empty item"]),
    ("tx=off,", ["empty item"]),
    ("all-off,tx=on", ["'all-off'", "cannot be combined"]),
    ("tx=off,sg", ["'sg'", "feature=value"]),
    ("tx=", ["''", "on, off"]),
    ("=off", ["''", "valid features"]),
    ("x" * 600, ["too long"]),
]


@pytest.mark.parametrize("text,words", INVALID,
                         ids=[v[0][:20] or "empty" for v in INVALID])
def test_invalid_policies_name_token_and_list_valid(text, words):
    with pytest.raises(BadArgument) as info:
        parse_policy(text)
    for word in words:
        assert word in info.value.message


def test_non_string_policy_is_refused():
    with pytest.raises(BadArgument):
        parse_policy(None)


@pytest.mark.parametrize("raw,expected", [
    ("on", "on"), ("true", "on"), ("TRUE", "on"), (" off ", "off"),
    ("false", "off"), ("Off", "off")], ids=lambda v: repr(v))
def test_normalise_value(raw, expected):
    assert normalise_value(raw) == expected


@pytest.mark.parametrize("raw", ["yes", "1", "", "onn", None],
                         ids=["yes", "one", "empty", "onn", "None"])
def test_normalise_value_refuses_others(raw):
    with pytest.raises(BadArgument) as info:
        normalise_value(raw)
    assert "on, off, true, false" in info.value.message


def test_profiles_are_what_design_says():
    assert PROFILES["all-off"] == ALL_OFF
    assert PROFILES["tx-off"] == {"tx": "off"}
    assert PROFILES["none"] == {}


def test_profile_equals_its_list_form():
    assert parse_policy("tx-off") == parse_policy("tx=off")
    assert parse_policy("tx-off") != parse_policy("all-off")
    assert hash(parse_policy("tx-off")) == hash(parse_policy("tx=false"))


def test_policy_objects_do_not_share_profile_dicts():
    policy = parse_policy("all-off")
    policy.features["tx"] = "on"
    assert PROFILES["all-off"]["tx"] == "off"
    assert isinstance(policy, Policy)
