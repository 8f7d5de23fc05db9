"""Reading and setting netdev features with the SIOCETHTOOL ioctl (no
process per device).

Four ethtool commands on one AF_INET datagram socket, reused for every
device: ETHTOOL_GSSET_INFO for the number of feature strings,
ETHTOOL_GSTRINGS for their names (global to the kernel, so cached),
ETHTOOL_GFEATURES for the available / requested / active / never-changed
bitmaps of one device, and ETHTOOL_SFEATURES to change requests: a `valid`
mask of the bits to change and their `requested` values, all in one call,
after which the kernel recomputes the active features once (its
dependencies included: tx off takes tso, sg off takes gso). Its return
value carries ETHTOOL_F_UNSUPPORTED (a valid bit the device cannot change;
it was ignored) and ETHTOOL_F_WISH (requested and active differ for a
valid bit: the kernel or the driver kept it). This is what `ethtool -K`
does, through the ioctl or the equivalent netlink request. The socket
belongs to the network namespace it was created in.
"""
import errno
import fcntl
import sys

try:
    # the C modules themselves: `socket` imports enum, selectors and more,
    # `struct` is a file that re-exports _struct; both are start-up time of
    # the udev helper (only .socket() and the packing functions are used)
    import _socket as socket_module
    import _struct as struct
except ImportError:  # pragma: no cover - every CPython has them
    import socket as socket_module
    import struct

SIOCETHTOOL = 0x8946
ETHTOOL_GSTRINGS = 0x1b
ETHTOOL_GSSET_INFO = 0x37
ETHTOOL_GFEATURES = 0x3a
ETHTOOL_SFEATURES = 0x3b
ETHTOOL_F_UNSUPPORTED = 1 << 0
ETHTOOL_F_WISH = 1 << 1
ETHTOOL_F_COMPAT = 1 << 2
ETH_SS_FEATURES = 4
ETH_GSTRING_LEN = 32
IFNAMSIZ = 16
# struct ifreq is 40 bytes on 64-bit, 32 on 32-bit; the kernel reads only
# the name and the data pointer, so 40 fits both.
_IFREQ_SIZE = 40
_BLOCK = struct.Struct("=4I")  # available, requested, active, never_changed
_SET_BLOCK = struct.Struct("=2I")  # valid, requested

# errnos after which the ethtool binary may still succeed (netlink path,
# or a driver without the legacy ioctl).
FALLBACK_ERRNOS = frozenset(e for e in (
    errno.EOPNOTSUPP, getattr(errno, "ENOTSUP", errno.EOPNOTSUPP),
    errno.EPERM, errno.EACCES, errno.EINVAL, errno.ENOTTY,
    errno.EAFNOSUPPORT, errno.EFAULT))


def _array_buffer(size):
    """(buffer, address): a zeroed, writable buffer whose address stays
    put while it lives (ioctl data), as an array (buffer_info)."""
    import array  # noqa: PLC0415 (start-up: see _buffer)
    buf = array.array("B", bytes(size))
    return buf, buf.buffer_info()[0]


_CTYPES = []  # [(_ctypes, its c_char)], made on first use
_CTYPES_TYPES = {}  # size -> array type


def _ctypes_buffer(size):
    """_array_buffer's twin over ctypes' C module (`ctypes` itself costs as
    much as the array import it replaces)."""
    if not _CTYPES:
        import _ctypes  # noqa: PLC0415 (start-up: see _buffer)

        class _Char(_ctypes._SimpleCData):  # ctypes.c_char
            _type_ = "c"
        _CTYPES.append((_ctypes, _Char))
    module, char = _CTYPES[0]
    # one array type serves every request up to a page (each new type is
    # a class to build); the kernel uses only what the command says
    size = max(size, 4096)
    kind = _CTYPES_TYPES.get(size)
    if kind is None:
        kind = _CTYPES_TYPES[size] = char * size
    buf = kind()
    return buf, module.addressof(buf)


def _pick_buffer():
    """array where it is cheap: since Python 3.10 importing it imports
    collections.abc (a third of a bare interpreter's start, on every udev
    bring-up) unless that is loaded already; there ctypes' C module."""
    if sys.version_info < (3, 10) or "collections.abc" in sys.modules:
        return _array_buffer
    try:
        import _ctypes  # noqa: F401, PLC0415 (is it there?)
    except ImportError:  # pragma: no cover - a python built without libffi
        return _array_buffer
    return _ctypes_buffer


_buffer = _pick_buffer()


class IoctlReader(object):
    """Reads features of many devices through one socket."""

    def __init__(self):
        self._sock = socket_module.socket(socket_module.AF_INET,
                                          socket_module.SOCK_DGRAM)
        self._strings = {}  # count -> tuple of names
        self._index = {}  # count -> {name: bit index}
        self._count = None

    def close(self):
        self._sock.close()  # idempotent; a later read fails with EBADF

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _ioctl(self, device, buffer):
        """The ioctl's return value (SFEATURES returns flags in it);
        buffer: (buf, address) from _buffer, the ethtool command in buf."""
        ifreq = bytearray(_IFREQ_SIZE)
        struct.pack_into("%dsP" % IFNAMSIZ, ifreq, 0, device.encode("ascii"),
                         buffer[1])
        fd = self._sock.fileno()
        if fd < 0:
            raise OSError(errno.EBADF, "the ioctl reader is closed")
        return fcntl.ioctl(fd, SIOCETHTOOL, ifreq, True)

    def _feature_count(self, device):
        buffer = _buffer(struct.calcsize("=IIQI"))
        buf = buffer[0]
        struct.pack_into("=IIQ", buf, 0, ETHTOOL_GSSET_INFO, 0,
                         1 << ETH_SS_FEATURES)
        self._ioctl(device, buffer)
        mask = struct.unpack_from("=Q", buf, 8)[0]
        if not mask & (1 << ETH_SS_FEATURES):
            raise OSError(errno.EOPNOTSUPP, "no feature strings")
        return struct.unpack_from("=I", buf, 16)[0]

    def _feature_names(self, device, count):
        names = self._strings.get(count)
        if names is None:
            buffer = _buffer(12 + count * ETH_GSTRING_LEN)
            struct.pack_into("=III", buffer[0], 0, ETHTOOL_GSTRINGS,
                             ETH_SS_FEATURES, count)
            self._ioctl(device, buffer)
            raw = bytes(buffer[0])[12:]
            names = tuple(
                raw[i * ETH_GSTRING_LEN:(i + 1) * ETH_GSTRING_LEN]
                .split(b"\0", 1)[0].decode("ascii", "replace")
                for i in range(count))
            self._strings[count] = names
        return names

    def _names(self, device):
        count = self._count
        if count is None:
            # ETH_SS_FEATURES is one global table: ask once per reader.
            count = self._count = self._feature_count(device)
        return count, self._feature_names(device, count)

    def write(self, device, requests):
        """Set the requests {kernel feature name: bool} of device in one
        ETHTOOL_SFEATURES call; the ETHTOOL_F_* flags it returns. Only
        changeable bits belong in `requests` (as `ethtool -K` sends them):
        the kernel refuses NETIF_F_NEVER_CHANGE bits with EINVAL.
        ValueError for a name this kernel does not have; OSError from the
        ioctl."""
        count, names = self._names(device)
        index = self._index.get(count)
        if index is None:
            index = self._index[count] = dict(
                (name, i) for i, name in enumerate(names) if name)
        blocks = (count + 31) // 32
        words = [0] * (2 * blocks)
        for name, on in requests.items():
            position = index.get(name)
            if position is None:
                raise ValueError("this kernel has no feature %r" % name)
            bit = 1 << (position % 32)
            words[2 * (position // 32)] |= bit
            if on:
                words[2 * (position // 32) + 1] |= bit
        buffer = _buffer(8 + blocks * _SET_BLOCK.size)
        struct.pack_into("=II%dI" % len(words), buffer[0], 0,
                         ETHTOOL_SFEATURES, blocks, *words)
        return self._ioctl(device, buffer)

    def read_words(self, device):
        """(names, words): the kernel's feature names (a tuple, the same
        object for every device) and the GFEATURES words, four per block
        of 32 (available, requested, active, never_changed); raises
        OSError from the ioctl."""
        count, names = self._names(device)
        blocks = (count + 31) // 32
        buffer = _buffer(8 + blocks * _BLOCK.size)
        struct.pack_into("=II", buffer[0], 0, ETHTOOL_GFEATURES, blocks)
        self._ioctl(device, buffer)
        return names, struct.unpack_from("=%dI" % (4 * blocks), buffer[0], 8)

    def read(self, device):
        """[(name, active, fixed, requested)] in kernel order, where fixed
        is ethtool's rule (not in hw_features, or NETIF_F_NEVER_CHANGE);
        raises OSError from the ioctl."""
        names, words = self.read_words(device)
        return decode(names, words)


def decode(names, words):
    """[(name, active, fixed, requested)] from read_words()."""
    return [(name, bool(words[base + 2] & bit),
             not words[base] & bit or bool(words[base + 3] & bit),
             bool(words[base + 1] & bit))
            for name, base, bit in _positions(names)]


_POSITIONS = {}  # names -> ((name, word, bit mask),)


def _positions(names):
    positions = _POSITIONS.get(names)
    if positions is None:
        positions = _POSITIONS[names] = tuple(
            (name, 4 * (index // 32), 1 << (index % 32))
            for index, name in enumerate(names) if name)
    return positions
