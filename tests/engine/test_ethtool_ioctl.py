"""The ioctl buffers: ethtool_ioctl picks array or ctypes' C module by
what is cheap to import (the udev helper's start-up); both must give the
kernel an address it reads from and writes to."""
import os
import subprocess
import sys

import pytest

from netoffload.engine import ethtool_ioctl


@pytest.mark.root
@pytest.mark.parametrize("make", [ethtool_ioctl._array_buffer,
                                  ethtool_ioctl._ctypes_buffer],
                         ids=["array", "ctypes"])
def test_both_buffers_read_and_set_features_through_the_kernel(netns, mocker, make):
    netns.add_veth("nobuf0", "nobuf1")
    mocker.patch.object(ethtool_ioctl, "_buffer", make)
    with netns.entered():
        reader = ethtool_ioctl.IoctlReader()
        try:
            rows = dict((name, (active, requested))
                        for name, active, _, requested in reader.read("nobuf0"))
            assert rows["tx-generic-segmentation"] == (True, True)
            flags = reader.write("nobuf0", {"tx-generic-segmentation": False})
            assert not flags & ethtool_ioctl.ETHTOOL_F_UNSUPPORTED
            rows = dict((name, (active, requested))
                        for name, active, _, requested in reader.read("nobuf0"))
            assert rows["tx-generic-segmentation"] == (False, False)
        finally:
            reader.close()
    text = netns.ethtool_k("nobuf0")
    assert "generic-segmentation-offload: off" in text


@pytest.mark.parametrize("size", [8, 20, 12 + 64 * 32])
def test_a_buffer_is_zeroed_and_its_address_is_its_data(size):
    for make in (ethtool_ioctl._array_buffer, ethtool_ioctl._ctypes_buffer):
        buf, address = make(size)
        assert len(bytes(buf)) >= size and not any(bytes(buf))
        assert isinstance(address, int) and address > 0
        memoryview(buf).cast("B")[0] = 1  # writable
        assert bytes(buf)[:1] == b"\x01"


def test_the_udev_helper_process_takes_ctypes_not_array_on_new_pythons():
    code = ("import sys; from netoffload.engine import ethtool_ioctl as m; "
            "print(m._buffer.__name__, 'array' in sys.modules, "
            "'collections' in sys.modules)")
    out = subprocess.run([sys.executable, "-I", "-S", "-c",
                          "import sys; sys.path.insert(0, %r); %s"
                          % (_repo(), code)],
                         stdout=subprocess.PIPE, universal_newlines=True,
                         check=True, timeout=30).stdout.split()
    if sys.version_info >= (3, 10):
        assert out == ["_ctypes_buffer", "False", "False"]
    else:
        assert out[0] == "_array_buffer"


def _repo():
    return os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(ethtool_ioctl.__file__))))
