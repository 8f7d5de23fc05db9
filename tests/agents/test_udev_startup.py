"""The udev helper's cheap start: what a bring-up imports, and the pieces
that replace heavier standard-library modules on that path.

Timings live in bench/bench_udev.py; these tests pin the causes: a real
helper run (fresh device, cache hit, ethtool -K, live-state record) must
not pull in logging, logging.handlers, fnmatch, ctypes or tempfile, nor
any of the package's modules beyond the cache reader and the engine's
device side (the cache writer and the pool's precedence are the boot
unit's and the watcher's).
"""
import fnmatch
import shutil
import sys

import pytest

from netoffload.engine import features
from netoffload.log import SyslogLogger

HEAVY = ("logging", "logging.handlers", "fnmatch", "ctypes", "tempfile",
         "json", "typing",
         # array imports collections.abc (3.10+), operator is a file over
         # _operator; a guest device's xenstore-read runs without
         # subprocess (runner.run_small)
         "array", "collections", "collections.abc", "operator", "struct",
         "subprocess", "socket", "signal", "enum", "contextlib", "functools",
         "selectors", "threading", "re", "locale")
# a PIF runs no child at all; a guest device runs xenstore-read (aside)
CHILD = ("netoffload.runner", "select")
# Every netoffload module a bring-up may load: a new one here is start-up
# time on every interface of every boot.
OWN_MODULES = {
    "netoffload", "netoffload.errors", "netoffload.exitcodes", "netoffload.log",
    "netoffload.paths", "netoffload.runner", "netoffload.statedir",
    "netoffload.agents", "netoffload.agents.cache", "netoffload.agents.cached",
    "netoffload.agents.udev",
    "netoffload.engine", "netoffload.engine.devices", "netoffload.engine.ethtool",
    "netoffload.engine.ethtool_ioctl", "netoffload.engine.features",
    "netoffload.engine.livestate", "netoffload.engine.jsonlite",
    "netoffload.pool", "netoffload.pool.keys",
}

_LIST_MODULES = ("import sys; from netoffload.agents.udev import main; "
                 "main(sys.argv[1:]); "
                 "sys.stdout.write(' '.join(sorted(sys.modules)))")


@pytest.mark.root
@pytest.mark.parametrize("device", ["eth0", "tap5.0"], ids=["pif", "tap"])
def test_a_bring_up_imports_none_of_the_heavy_modules(dom0, device):
    before = dom0.features(device)
    # -S: no site (as the installed helper runs: -IS); the code comes from
    # PYTHONPATH
    proc = dom0.ns.run([sys.executable, "-S", "-c", _LIST_MODULES, device],
                       env=dom0.env(device), check=False, timeout=30)
    assert (proc.returncode, proc.stderr) == (0, "")
    assert dom0.features(device) != before  # it did the whole job
    loaded = set(proc.stdout.split())
    assert {"netoffload.engine.livestate", "netoffload.engine.ethtool_ioctl"} <= loaded
    assert sorted(loaded & set(HEAVY)) == []
    if device == "eth0":
        assert sorted(loaded & set(CHILD)) == []
    assert sorted(m for m in loaded if m.split(".")[0] == "netoffload"
                  and m not in OWN_MODULES) == []


@pytest.mark.root
def test_a_pif_bring_up_runs_no_child_process(dom0, tmp_path):
    """strace -f: the helper process itself, nothing else (not even
    ethtool: the features are set by ioctl)."""
    strace = shutil.which("strace")
    if strace is None:
        pytest.skip("no strace on this machine")
    out = str(tmp_path / "strace.out")
    before = dom0.features("eth0")
    proc = dom0.ns.run([strace, "-f", "-qq", "-e", "trace=execve", "-o", out,
                        sys.executable, "-S", "-m", "netoffload.agents.udev",
                        "eth0"], env=dom0.env("eth0"), check=False, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert dom0.features("eth0") != before
    with open(out) as handle:
        execs = [line for line in handle if "execve(" in line]
    assert len(execs) == 1, execs  # the helper's own python3


# Every kernel feature name this project has seen (tests/fixtures and
# current kernels), plus near misses.
KERNEL_NAMES = (
    "rx-checksum", "tx-checksum-ipv4", "tx-checksum-ip-generic",
    "tx-checksum-ipv6", "tx-checksum-fcoe-crc", "tx-checksum-sctp",
    "tx-scatter-gather", "tx-scatter-gather-fraglist",
    "tx-tcp-segmentation", "tx-tcp-ecn-segmentation",
    "tx-tcp-mangleid-segmentation", "tx-tcp6-segmentation",
    "tx-tcp-accecn-segmentation", "tx-udp-fragmentation",
    "tx-generic-segmentation", "rx-gro", "rx-lro", "rx-gro-hw",
    "rx-gro-list", "rx-udp-gro-forwarding", "rx-vlan-hw-parse",
    "tx-vlan-hw-insert", "rx-ntuple-filter", "rx-hashing",
    "tx-udp-segmentation", "tx-gso-partial", "tx-checksum", "tx-tcp",
    "tx-tcp-segmentation-x", "xtx-tcp-segmentation", "tx-tcpsegmentation",
    "", "rx-checksumx", "highdma", "loopback", "hsr-tag-ins-offload")


@pytest.mark.parametrize("short", sorted(features.KERNEL_PATTERNS))
def test_star_match_agrees_with_fnmatch(short):
    for pattern in features.KERNEL_PATTERNS[short]:
        for name in KERNEL_NAMES:
            assert features._star_match(name, pattern) == \
                fnmatch.fnmatchcase(name, pattern), (name, pattern)


@pytest.mark.parametrize("pattern", ["a*b*c", "*", "a*", "*c", "abc"])
@pytest.mark.parametrize("name", ["abc", "ac", "abbc", "abcbc", "a", "c", "",
                                  "xabc", "abcx", "aXbYc"])
def test_star_match_agrees_with_fnmatch_on_star_patterns(pattern, name):
    assert features._star_match(name, pattern) == fnmatch.fnmatchcase(name, pattern)


@pytest.mark.parametrize("level, priority, on_stderr", [
    ("info", "LOG_INFO", False), ("warning", "LOG_WARNING", True),
    ("error", "LOG_ERR", True)])
def test_syslog_logger_tags_levels_and_stderr(mocker, capsys, level, priority,
                                              on_stderr):
    import syslog
    openlog = mocker.patch("syslog.openlog", autospec=True)
    send = mocker.patch("syslog.syslog", autospec=True)
    logger = SyslogLogger()
    getattr(logger, level)("udev add %s: %d features", "tap5.0", 3)
    openlog.assert_called_once_with("netoffload", 0, syslog.LOG_USER)
    send.assert_called_once_with(getattr(syslog, priority),
                                 "udev add tap5.0: 3 features")
    err = capsys.readouterr().err
    assert err == ("netoffload: %s udev add tap5.0: 3 features\n"
                   % level.upper() if on_stderr else "")


def test_syslog_logger_exception_carries_the_traceback(mocker, capsys):
    mocker.patch("syslog.openlog", autospec=True)
    send = mocker.patch("syslog.syslog", autospec=True)
    try:
        raise ValueError("boom")
    except ValueError:
        SyslogLogger().exception("udev: unexpected %s", "x")
    text = send.call_args[0][1]
    assert text.startswith("udev: unexpected x\nTraceback")
    assert text.endswith("ValueError: boom")
    assert capsys.readouterr().err.startswith("netoffload: ERROR udev: unexpected x")
