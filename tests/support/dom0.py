"""One dom0 without XAPI: a network namespace with dom0-named devices, the
local cache, a xenstore stand-in and an `ethtool` wrapper that logs each
call, for running the udev helper the way udev runs it."""
import json
import os
import sys

from netoffload.agents import cache, cache_writer
from netoffload.engine.ethtool import parse_features_text
from tests.support import layout

SIM_BIN = os.path.join(layout.REPO, "sim", "bin")
VM_UUID = "5a5a5a5a-1111-2222-3333-444444444444"
OTHER_VM_UUID = "6b6b6b6b-1111-2222-3333-444444444444"
ALL_OFF = dict((f, "off") for f in ("rx", "tx", "sg", "tso", "ufo", "gso",
                                    "gro", "lro"))
TX_OFF = {"tx": "off"}


def cache_data():
    """The cache Dom0 starts with: a PIF, two VMs' VIFs."""
    return {"format": cache.FORMAT, "generated_at": "2024-01-01T00:00:00Z",
            "host": {"uuid": "host-uuid", "name": "xs1"}, "policy": {},
            "pifs": {"eth0": {"features": {"gro": "off", "sg": "off"},
                              "source": "pool", "policy": "gro=off,sg=off"}},
            "vifs": {VM_UUID + "/0": {"features": ALL_OFF, "source": "vm",
                                      "policy": "all-off", "vm": "web 01"},
                     VM_UUID + "/1": {"features": TX_OFF, "source": "tag:bsd",
                                      "policy": "tx-off", "vm": "web 01"},
                     OTHER_VM_UUID + "/0": {"features": ALL_OFF,
                                            "source": "pool",
                                            "policy": "all-off", "vm": "db"}}}


class Dom0(object):
    """A netns with dom0-named devices, a cache, xenstore and tool wrappers."""

    def __init__(self, ns, tmp_path):
        self.ns = ns
        self.state = str(tmp_path / "state")
        self.xenstore = str(tmp_path / "xenstore.json")
        self.calls = str(tmp_path / "ethtool-calls")
        self.bin = tmp_path / "bin"
        self.bin.mkdir()
        wrapper = self.bin / "ethtool"
        wrapper.write_text("#!/bin/sh\necho \"$*\" >> %s\nexec %s \"$@\"\n" % (
            self.calls, "/usr/sbin/ethtool"))
        wrapper.chmod(0o755)
        with open(self.xenstore, "w") as handle:
            json.dump({"/local/domain/5/vm": "/vm/" + VM_UUID,
                       # an older layout: the uuid lives under the vm node
                       "/local/domain/8/vm": "/vm/legacy-8",
                       "/vm/legacy-8/uuid": OTHER_VM_UUID}, handle)
        cache_writer.write(cache_data(), self.state)
        ns.add_tap("tap5.0")
        ns.add_veth("vif5.1", "guest51")
        ns.add_veth("vif8.0", "guest80")
        ns.add_veth("eth0", "peer0")
        ns.add_veth("tap9.0", "guest90")

    def env(self, device, action="add", subsystem="net", **extra):
        env = {"PATH": "%s:%s:/usr/sbin:/usr/bin:/sbin:/bin" % (self.bin, SIM_BIN),
               "PYTHONPATH": layout.REPO, "ACTION": action, "SUBSYSTEM": subsystem,
               "INTERFACE": device, "DEVPATH": "/devices/virtual/net/" + device,
               "SEQNUM": "4242", "NETOFFLOAD_STATE_DIR": self.state,
               "NETOFFLOAD_SIM_XENSTORE": self.xenstore}
        env.update(extra)
        return env

    def helper(self, argv, env):
        return self.ns.run([sys.executable, "-m", "netoffload.agents.udev"] + argv,
                           env=env, check=False, timeout=30)

    def features(self, device):
        return parse_features_text(self.ns.ethtool_k(device), device).as_onoff()

    def ethtool_text(self, device):
        return self.ns.ethtool_k(device)

    def set_calls(self):
        if not os.path.exists(self.calls):
            return []
        with open(self.calls) as handle:
            return [line.split() for line in handle if line.startswith("-K ")]
