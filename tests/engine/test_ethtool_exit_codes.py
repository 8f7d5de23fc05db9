"""ethtool -K's exit code 80 ("nothing changed", the ioctl-era ethtool of
older dom0s) is success; other non-zero codes are errors. The -K really runs
on a namespaced veth (so the read-back is the kernel's); only the exit code
it reports is replaced, as that ethtool would report it. The binary is
what runs where ETHTOOL_SFEATURES is unavailable, so these tests take the
ioctl away (EOPNOTSUPP, as such a kernel answers)."""
import errno
import subprocess

import pytest

from netoffload import runner
from netoffload.engine import ethtool, ethtool_ioctl

pytestmark = pytest.mark.root


def _no_sfeatures(self, device, requests):
    raise OSError(errno.EOPNOTSUPP, "Operation not supported")


@pytest.fixture
def veth(netns, mocker):
    mocker.patch.object(ethtool_ioctl.IoctlReader, "write", _no_sfeatures)
    netns.add_veth("dut", "dutpeer")
    with netns.entered():
        yield "dut"


def ethtool_set_reporting(mocker, code):
    """runner.run patched: `ethtool -K` runs for real and reports `code`;
    returns (the mock, the CompletedProcesses it reported for -K)."""
    real_run = runner.run
    reported = []

    def run(argv, *args, **kwargs):
        done = real_run(argv, *args, **kwargs)
        if argv[:2] != [ethtool.ETHTOOL, "-K"]:
            return done
        reported.append(subprocess.CompletedProcess(argv, code, done.stdout, done.stderr))
        return reported[-1]
    return mocker.patch("netoffload.runner.run", autospec=True, side_effect=run), reported


# 80 as a literal: the number is ethtool's, not ours to rename.
@pytest.mark.parametrize("code,is_error", [(0, False), (80, False), (1, True), (81, True)],
                         ids=["0", "80-already-set", "1", "81"])
def test_exit_code_of_ethtool_set(mocker, veth, code, is_error):
    assert ethtool.read_features(veth).as_onoff()["tx"] == "on"
    _mock_run, reported = ethtool_set_reporting(mocker, code)
    result = ethtool.apply_features(veth, {"tx": "off"})
    [done] = reported
    assert isinstance(done.stdout, str) and isinstance(done.stderr, str)
    assert done.args == [ethtool.ETHTOOL, "-K", veth, "tx", "off"]
    assert (result.ran_command, result.features["tx"], result.after["tx"], result.ok) == (
        True, "changed", "off", True)
    assert result.errors == (["ethtool -K exit %d: %s" % (code, done.stderr.strip())]
                             if is_error else [])
    assert ethtool.read_features(veth).as_onoff()["tx"] == "off"
