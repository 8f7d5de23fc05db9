import pytest

from netoffload.engine.devices import (
    guest_device_name,
    parse_guest_device,
    validate_device,
)
from netoffload.errors import BadArgument

VALID = ["eth0", "xenbr0", "bond0", "vif12.0", "tap3.1", "eth0.100", "a", "x" * 15, "ib0:1",
         "eth@1", "br-lan"]
INVALID = ["", "x" * 16, "eth0\n", "eth 0", "eth0;ls", "$(id)", "eth0/1", ".", "..", "é0", None, 5]


@pytest.mark.parametrize("name", VALID, ids=VALID)
def test_valid_names_pass_unchanged(name):
    assert validate_device(name) == name


@pytest.mark.parametrize("name", INVALID, ids=[repr(n) for n in INVALID])
def test_invalid_names_are_refused(name):
    with pytest.raises(BadArgument):
        validate_device(name)


@pytest.mark.parametrize("name,expected", [
    ("vif5.0", ("vif", 5, 0)),
    ("tap12.3", ("tap", 12, 3)),
    ("vif5.0\n", None),
    ("vif5", None),
    ("eth0", None),
    ("tapx.1", None),
], ids=["vif", "tap", "newline", "no-devid", "pif", "bad-domid"])
def test_guest_device_names(name, expected):
    assert parse_guest_device(name) == expected


@pytest.mark.parametrize("kind,domid,devid", [("vif", 1, 0), ("tap", 37, 2),
                                              ("vif", "12", "3")])
def test_guest_device_name_round_trips(kind, domid, devid):
    name = guest_device_name(kind, domid, devid)
    assert parse_guest_device(name) == (kind, int(domid), int(devid))


def test_guest_device_name_refuses_other_kinds():
    with pytest.raises(ValueError):
        guest_device_name("eth", 1, 0)
