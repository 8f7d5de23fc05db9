"""`udevadm test` against given rules, leaving the machine's udev alone.

udevadm (252 here) reads rules only from the fixed directories
/etc/udev/rules.d, /run/udev/rules.d and /usr/lib/udev/rules.d, and writes
the tested device's entry to /run/udev/data/n<ifindex>; no option or
variable moves either. So each run gets a private mount namespace
(`unshare --mount`, private propagation) with a fresh tmpfs over /run/udev
whose rules.d holds only the given rules files: concurrent runs never see
each other's rules, and the host's rules and udev database stay untouched.
The network namespace comes from `ip netns exec`, which also mounts that
namespace's /sys for the device path.
"""
import os
import shutil
import subprocess
import tempfile

RULES_DIR = "/run/udev/rules.d"

# $1: a directory of rules files; the rest: the command to run.
_PRIVATE_RUN_UDEV = (
    'set -e\n'
    'mkdir -p /run/udev\n'
    'mount -t tmpfs -o mode=0755 netoffload-udevtest /run/udev\n'
    'mkdir /run/udev/rules.d /run/udev/data\n'
    'cp "$1"/* /run/udev/rules.d/\n'
    'shift\n'
    'exec "$@"\n')


def rules_path(name):
    """Where udevadm, inside the private namespace, reads rules file name."""
    return os.path.join(RULES_DIR, name)


def udevadm_test(netns_name, device, rules, action="add", timeout=30):
    """Run `udevadm test --action=<action> /sys/class/net/<device>` in the
    network namespace with only `rules` ({file name: text}) in
    /run/udev/rules.d. Returns the CompletedProcess (text output)."""
    staging = tempfile.mkdtemp(prefix="netoffload-udevtest-")
    try:
        for name, text in rules.items():
            with open(os.path.join(staging, name), "w") as handle:
                handle.write(text)
        argv = ["unshare", "--mount", "--propagation", "private", "--",
                "sh", "-c", _PRIVATE_RUN_UDEV, "sh", staging,
                "ip", "netns", "exec", netns_name,
                "udevadm", "test", "--action=" + action,
                "/sys/class/net/" + device]
        return subprocess.run(argv, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, universal_newlines=True,
                              timeout=timeout)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
