"""Every dom0 path the pack reads or writes, and its test override.

The `NETOFFLOAD_*` environment variables exist for the test suite and the
pool in a box only; in dom0 none is set and the defaults below are used.
Each function reads its variable when called, so a test can set it late.
"""
import os

STATE_DIR = "/var/lib/netoffload"
INVENTORY = "/etc/xensource-inventory"
NETWORK_CONF = "/etc/xensource/network.conf"
PLUGIN = "/etc/xapi.d/plugins/netoffload"
# dom0's local xapi socket (what XenAPI.xapi_local() connects to)
XAPI_SOCKET = "/var/lib/xcp/xapi"

ENV_STATE_DIR = "NETOFFLOAD_STATE_DIR"
ENV_INVENTORY = "NETOFFLOAD_INVENTORY"
ENV_NETWORK_CONF = "NETOFFLOAD_NETWORK_CONF"
ENV_XAPI_SOCKET = "NETOFFLOAD_XAPI_SOCKET"
ENV_XAPI_URL = "NETOFFLOAD_XAPI_URL"
ENV_SYSLOG_SOCKET = "NETOFFLOAD_SYSLOG_SOCKET"
SYSLOG_SOCKET = "/dev/log"
# changes at every boot: what was true of the kernel's state before it is not
BOOT_ID = "/proc/sys/kernel/random/boot_id"


def state_dir(explicit=None):
    """The state directory: explicit, else $NETOFFLOAD_STATE_DIR, else
    /var/lib/netoffload."""
    return explicit or os.environ.get(ENV_STATE_DIR) or STATE_DIR


def inventory(explicit=None):
    return explicit or os.environ.get(ENV_INVENTORY) or INVENTORY


def network_conf(explicit=None):
    return explicit or os.environ.get(ENV_NETWORK_CONF) or NETWORK_CONF


def xapi_endpoint():
    """("socket", path) or ("url", url) when a test points the pack at a
    simulator, else None: dom0's own socket through XenAPI.xapi_local()."""
    socket_path = os.environ.get(ENV_XAPI_SOCKET)
    if socket_path:
        return ("socket", socket_path)
    url = os.environ.get(ENV_XAPI_URL)
    if url:
        return ("url", url)
    return None


def syslog_socket():
    """The syslog socket: $NETOFFLOAD_SYSLOG_SOCKET (the pool in a box gives
    each host its own, read by its `journalctl` stand-in), else /dev/log."""
    return os.environ.get(ENV_SYSLOG_SOCKET) or SYSLOG_SOCKET


def boot_id():
    """This boot's id, or "" when it cannot be read."""
    try:
        with open(BOOT_ID) as handle:
            return handle.read(64).strip()
    except (IOError, OSError):
        return ""
