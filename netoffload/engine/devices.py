"""Device names: validation and the dom0 naming of guest devices."""
import re

from netoffload.errors import BadArgument

_DEVICE_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}\Z")
# vif<domid>.<devid> (netback) and tap<domid>.<devid> (qemu emulated NIC)
_GUEST_RE = re.compile(r"^(vif|tap)([0-9]{1,5})\.([0-9]{1,5})\Z")


def validate_device(name):
    """Return name if it is a plausible Linux interface name, else raise."""
    if not isinstance(name, str) or not _DEVICE_RE.match(name) \
            or name in (".", ".."):
        shown = name if isinstance(name, str) and len(name) <= 64 \
            else repr(name)[:64] + "..."
        raise BadArgument(
            "invalid device name %r: use 1-15 of A-Z a-z 0-9 _ . : @ -" % shown)
    return name


def parse_guest_device(name):
    """('vif'|'tap', domid, devid) for a guest backend device, else None."""
    match = _GUEST_RE.match(name or "")
    if not match:
        return None
    return match.group(1), int(match.group(2)), int(match.group(3))



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
