"""xapi.py helpers that need no XAPI: the inventory and error mapping."""
import pytest

from netoffload.errors import NotFound
from netoffload.pool import xapi

INVENTORY_CASES = [
    ("single-quotes", "INSTALLATION_UUID='6f1d-aa'\n", "6f1d-aa"),
    ("double-quotes", 'BUILD="x"\nINSTALLATION_UUID="77-bb"\n', "77-bb"),
    ("bare", "INSTALLATION_UUID=88-cc\n", "88-cc"),
    ("blanks-and-comments", "# INSTALLATION_UUID='no'\n\n"
     "INSTALLATION_UUID = '99-dd' \n", "99-dd"),
]


@pytest.mark.parametrize("text,uuid", [c[1:] for c in INVENTORY_CASES],
                         ids=[c[0] for c in INVENTORY_CASES])
def test_local_host_uuid(tmp_path, monkeypatch, text, uuid):
    path = tmp_path / "xensource-inventory"
    path.write_text(text)
    monkeypatch.setenv("NETOFFLOAD_INVENTORY", str(path))
    assert xapi.local_host_uuid() == uuid


@pytest.mark.parametrize("text", ["PRODUCT_BRAND='XenServer'\n",
                                  "INSTALLATION_UUID=''\n", None],
                         ids=["missing-key", "empty", "no-file"])
def test_local_host_uuid_not_found(tmp_path, monkeypatch, text):
    path = tmp_path / "xensource-inventory"
    if text is not None:
        path.write_text(text)
    monkeypatch.setenv("NETOFFLOAD_INVENTORY", str(path))
    with pytest.raises(NotFound):
        xapi.local_host_uuid()


def test_real_inventory_fixture_format(tmp_path):
    # The layout of a XenServer 8 dom0 inventory (values single-quoted).
    path = tmp_path / "inv"
    path.write_text("PRIMARY_DISK='/dev/disk/by-id/scsi-1'\n"
                    "PRODUCT_VERSION='8.4.0'\n"
                    "CONTROL_DOMAIN_UUID='0a8f-1'\n"
                    "INSTALLATION_UUID='3b4e-2'\n"
                    "MANAGEMENT_INTERFACE='xenbr0'\n")
    inventory = xapi.read_inventory(str(path))
    assert (inventory["INSTALLATION_UUID"], inventory["MANAGEMENT_INTERFACE"]) \
        == ("3b4e-2", "xenbr0")


def test_failure_details_are_strings():
    import XenAPI
    failure = XenAPI.Failure(["HANDLE_INVALID", "VIF", "OpaqueRef:x"])
    assert xapi.failure_details(failure) == ["HANDLE_INVALID", "VIF",
                                          "OpaqueRef:x"]
    assert xapi.failure_details(ValueError("x")) == ["UNKNOWN"]
