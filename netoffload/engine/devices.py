"""Device names: validation and the dom0 naming of guest devices.

No regular expressions: the udev helper checks a name on every bring-up,
and importing `re` is a large part of a Python start.
"""
from netoffload.errors import BadArgument

_DEVICE_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                          "0123456789_.:@-")
_DIGITS = frozenset("0123456789")


def _is_number(text, longest):
    """1..longest ASCII digits."""
    return 0 < len(text) <= longest and all(c in _DIGITS for c in text)


def validate_device(name):
    """Return name if it is a plausible Linux interface name, else raise."""
    if not isinstance(name, str) or not 0 < len(name) <= 15 \
            or not all(c in _DEVICE_CHARS for c in name) \
            or name in (".", ".."):
        shown = name if isinstance(name, str) and len(name) <= 64 \
            else repr(name)[:64] + "..."
        raise BadArgument(
            "invalid device name %r: use 1-15 of A-Z a-z 0-9 _ . : @ -" % shown)
    return name


def parse_guest_device(name):
    """('vif'|'tap', domid, devid) for a guest backend device
    (vif<domid>.<devid> for netback, tap<domid>.<devid> for qemu's
    emulated NIC), else None."""
    if not isinstance(name, str) or name[:3] not in ("vif", "tap"):
        return None
    domid, dot, devid = name[3:].partition(".")
    if not dot or not _is_number(domid, 5) or not _is_number(devid, 5):
        return None
    return name[:3], int(domid), int(devid)



# the kinds of device the pack manages: a PIF's NIC, a guest's netback
# device and its qemu emulated NIC
KIND_PIF = "pif"
KIND_VIF = "vif"
KIND_TAP = "tap"
GUEST_KINDS = (KIND_VIF, KIND_TAP)


def guest_device_name(kind, domid, devid):
    """The dom0 device of a guest NIC: vif<domid>.<devid> for the
    netback device, tap<domid>.<devid> for qemu's emulated NIC."""
    if kind not in GUEST_KINDS:
        raise ValueError("guest device kind %r" % (kind,))
    return "%s%d.%d" % (kind, int(domid), int(devid))
