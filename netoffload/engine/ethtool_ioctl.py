"""Reading netdev features with the SIOCETHTOOL ioctl (no process per device).

Three ethtool commands on one AF_INET datagram socket, reused for every
device: ETHTOOL_GSSET_INFO for the number of feature strings,
ETHTOOL_GSTRINGS for their names (global to the kernel, so cached), and
ETHTOOL_GFEATURES for the available / requested / active / never-changed
bitmaps of one device. The socket belongs to the network namespace it was
created in.
"""
import array
import errno
import fcntl
import socket
import struct

SIOCETHTOOL = 0x8946
ETHTOOL_GSTRINGS = 0x1b
ETHTOOL_GSSET_INFO = 0x37
ETHTOOL_GFEATURES = 0x3a
ETH_SS_FEATURES = 4
ETH_GSTRING_LEN = 32
IFNAMSIZ = 16
# struct ifreq is 40 bytes on 64-bit, 32 on 32-bit; the kernel reads only
# the name and the data pointer, so 40 fits both.
_IFREQ_SIZE = 40
_BLOCK = struct.Struct("=4I")  # available, requested, active, never_changed

# errnos after which the ethtool binary may still succeed (netlink path,
# or a driver without the legacy ioctl).
FALLBACK_ERRNOS = frozenset(e for e in (
    errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
    errno.EPERM, errno.EACCES, errno.EINVAL, errno.ENOTTY,
    errno.EAFNOSUPPORT, errno.EFAULT))


def _buffer(size):
    """A zeroed, writable buffer whose address stays put (ioctl data)."""
    return array.array("B", bytes(size))


class IoctlReader(object):
    """Reads features of many devices through one socket."""

    def __init__(self):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._strings = {}  # count -> tuple of names
        self._count = None

    def close(self):
        self._sock.close()  # idempotent; a later read fails with EBADF

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _ioctl(self, device, buf):
        # buf is an array: buffer_info() gives its address without ctypes
        # (a few ms of the udev helper's start-up)
        ifreq = struct.pack("%dsP" % IFNAMSIZ, device.encode("ascii"),
                            buf.buffer_info()[0])
        ifreq += b"\0" * (_IFREQ_SIZE - len(ifreq))
        fd = self._sock.fileno()
        if fd < 0:
            raise OSError(errno.EBADF, "the ioctl reader is closed")
        fcntl.ioctl(fd, SIOCETHTOOL, ifreq)

    def _feature_count(self, device):
        buf = _buffer(struct.calcsize("=IIQI"))
        struct.pack_into("=IIQ", buf, 0, ETHTOOL_GSSET_INFO, 0,
                         1 << ETH_SS_FEATURES)
        self._ioctl(device, buf)
        mask = struct.unpack_from("=Q", buf, 8)[0]
        if not mask & (1 << ETH_SS_FEATURES):
            raise OSError(errno.EOPNOTSUPP, "no feature strings")
        return struct.unpack_from("=I", buf, 16)[0]

    def _feature_names(self, device, count):
        names = self._strings.get(count)
        if names is None:
            buf = _buffer(12 + count * ETH_GSTRING_LEN)
            struct.pack_into("=III", buf, 0, ETHTOOL_GSTRINGS,
                             ETH_SS_FEATURES, count)
            self._ioctl(device, buf)
            raw = buf.tobytes()[12:]
            names = tuple(
                raw[i * ETH_GSTRING_LEN:(i + 1) * ETH_GSTRING_LEN]
                .split(b"\0", 1)[0].decode("ascii", "replace")
                for i in range(count))
            self._strings[count] = names
        return names

    def read(self, device):
        """[(name, active, fixed, requested)] in kernel order, where fixed
        is ethtool's rule (not in hw_features, or NETIF_F_NEVER_CHANGE);
        raises OSError from the ioctl."""
        count = self._count
        if count is None:
            # ETH_SS_FEATURES is one global table: ask once per reader.
            count = self._count = self._feature_count(device)
        names = self._feature_names(device, count)
        blocks = (count + 31) // 32
        buf = _buffer(8 + blocks * _BLOCK.size)
        struct.pack_into("=II", buf, 0, ETHTOOL_GFEATURES, blocks)
        self._ioctl(device, buf)
        words = struct.unpack_from("=%dI" % (4 * blocks), buf, 8)
        result = []
        for index, name in enumerate(names):
            if not name:
                continue
            base = 4 * (index // 32)
            bit = 1 << (index % 32)
            available = words[base] & bit
            requested = bool(words[base + 1] & bit)
            active = bool(words[base + 2] & bit)
            fixed = not available or bool(words[base + 3] & bit)
            result.append((name, active, fixed, requested))
        return result
