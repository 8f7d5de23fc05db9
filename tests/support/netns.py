"""Throw-away network namespaces with real kernel devices for tests.

Each NetNS has a unique name (pid, counter and a random token, so neither
concurrent runs nor a namespace a crashed run left behind collide), and
`close()` deletes it with everything in it.
`run()` goes through `ip netns exec`, which also remounts /sys for the
namespace; `entered()` moves this (single-threaded) process into the
namespace for in-process ioctl code and moves it back afterwards.
"""
import binascii
import contextlib
import ctypes
import itertools
import os
import subprocess

CLONE_NEWNET = 0x40000000
_counter = itertools.count()


class NetNSError(Exception):
    pass


def _libc():
    return ctypes.CDLL(None, use_errno=True)


def _setns(fd):
    if _libc().setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


class NetNS(object):
    def __init__(self, tag="t"):
        self.name = "notest-%s-%d-%d-%s" % (
            tag, os.getpid(), next(_counter),
            binascii.hexlify(os.urandom(3)).decode())
        subprocess.run(["ip", "netns", "add", self.name], check=True,
                       timeout=20)
        self.ip("link", "set", "lo", "up")

    # -- running things inside -------------------------------------------
    def run(self, argv, check=True, timeout=60, **kw):
        kw.setdefault("stdout", subprocess.PIPE)
        kw.setdefault("stderr", subprocess.PIPE)
        kw.setdefault("universal_newlines", True)
        proc = subprocess.run(["ip", "netns", "exec", self.name] + list(argv),
                              timeout=timeout, **kw)
        if check and proc.returncode != 0:
            raise NetNSError("%s failed (%d): %s" % (
                " ".join(argv), proc.returncode, proc.stderr.strip()))
        return proc

    def popen(self, argv, **kw):
        return subprocess.Popen(["ip", "netns", "exec", self.name] + list(argv),
                                **kw)

    def ip(self, *args, **kw):
        return self.run(["ip"] + list(args), **kw)

    def ethtool_k(self, dev):
        return self.run(["ethtool", "-k", dev], env=dict(os.environ, LC_ALL="C")).stdout

    @contextlib.contextmanager
    def entered(self):
        """Run the body with this process inside the namespace."""
        with open("/proc/self/ns/net") as home, \
                open("/run/netns/%s" % self.name) as target:
            _setns(target.fileno())
            try:
                yield self
            finally:
                _setns(home.fileno())

    # -- making devices ------------------------------------------------------
    def add_veth(self, name, peer, up=True):
        self.ip("link", "add", name, "type", "veth", "peer", "name", peer)
        if up:
            self.ip("link", "set", name, "up")
            self.ip("link", "set", peer, "up")
        return name

    def add_tap(self, name, up=True):
        self.ip("tuntap", "add", "dev", name, "mode", "tap")
        if up:
            self.ip("link", "set", name, "up")
        return name

    def add_guest_like(self, name, kind):
        """A veth (with peer <name>peer) or a tap named `name`: the two
        kinds a dom0 vif/tap device can be in these tests."""
        if kind == "veth":
            return self.add_veth(name, name + "peer")
        return self.add_tap(name)

    def add_link(self, name, kind, *extra, **kw):
        self.ip("link", "add", name, *(list(extra) + ["type", kind]))
        if kw.get("up", True):
            self.ip("link", "set", name, "up")
        return name

    def add_macvlan(self, name, parent):
        self.ip("link", "add", "link", parent, "name", name, "type", "macvlan",
                "mode", "bridge")
        self.ip("link", "set", name, "up")
        return name

    def links(self):
        out = self.ip("-o", "link", "show").stdout
        return [line.split(":")[1].strip().split("@")[0]
                for line in out.splitlines() if line.strip()]

    def close(self):
        subprocess.run(["ip", "netns", "del", self.name], timeout=20,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
