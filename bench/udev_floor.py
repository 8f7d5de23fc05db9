"""The floor of a udev helper in Python: bench_udev.py runs this script
(python3 -I -S, one fresh device per run) beside the real helper.

Not the product: a measuring stick. It does only the irreducible parts of
a bring-up, each the cheapest way Python offers, with no package, no
`os` (only the `posix` C module) and no error handling:

- the device's entry from the same cache.index the helper reads (header
  line, bucket table slice, bucket: three reads) parsed by json's C
  scanner;
- the live-state lock (open + flock), the record read and parsed;
- the ioctls of one change: the feature count, names and words, one
  ETHTOOL_SFEATURES with every grouped bit off, the words read back;
- the record written as the helper writes it: temp file, fsync, rename;
- one syslog line.

    python3 -I -S udev_floor.py STATE_DIR DEVICE PIF_NAME
"""
import _ctypes
import _json
import _socket
import _struct
import binascii
import fcntl
import posix
import sys
import syslog

state, device, key = sys.argv[1], sys.argv[2], sys.argv[3]


class _Scan(object):
    strict = True
    object_hook = object_pairs_hook = None
    parse_float, parse_int = float, int
    parse_constant = None


scan = _json.make_scanner(_Scan())

# the cache entry, as cache.IndexedCache reads it
fd = posix.open(state + "/cache.index", posix.O_RDONLY)
head = posix.read(fd, 4096)
first = head[:head.index(b"\n") + 1]
buckets = scan(first[first.index(b"{"):].decode(), 0)[0]["buckets"]
bucket = binascii.crc32(("pif " + key).encode()) % buckets
table = posix.pread(fd, 20, len(first) + bucket * 10)
start, end = int(table[:10]), int(table[10:])
text = posix.pread(fd, end - start, start)
found = text.index(("pif %s " % key).encode()) + len(key) + 5
entry = scan(text[found:text.index(b"\n", found)].decode(), 0)[0]
posix.close(fd)
assert entry["features"]

# the record, under the lock
lock = posix.open(state + "/live-state.lock", posix.O_RDWR | posix.O_CREAT, 0o600)
fcntl.flock(lock, fcntl.LOCK_EX)
fd = posix.open(state + "/live-state.json", posix.O_RDONLY)
chunks = []
while True:
    chunk = posix.read(fd, 65536)
    if not chunk:
        break
    chunks.append(chunk)
posix.close(fd)
record = scan(b"".join(chunks).decode(), 0)[0]


class _Char(_ctypes._SimpleCData):
    _type_ = "c"


sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)


def ioctl(size, fmt, *values):
    buf = (_Char * size)()
    _struct.pack_into(fmt, buf, 0, *values)
    ifreq = bytearray(40)
    _struct.pack_into("16sP", ifreq, 0, device.encode(), _ctypes.addressof(buf))
    return fcntl.ioctl(sock.fileno(), 0x8946, ifreq, True), bytes(buf)


count = _struct.unpack_from("=I", ioctl(20, "=IIQ", 0x37, 0, 1 << 4)[1], 16)[0]
raw = ioctl(12 + count * 32, "=III", 0x1b, 4, count)[1][12:]
names = [raw[i * 32:(i + 1) * 32].split(b"\0", 1)[0].decode()
         for i in range(count)]
blocks = (count + 31) // 32


def words():
    return _struct.unpack_from("=%dI" % (4 * blocks),
                               ioctl(8 + blocks * 16, "=II", 0x3a, blocks)[1], 8)


before = words()
request = [0] * (2 * blocks)
for index, name in enumerate(names):
    if name.startswith(("tx-checksum", "tx-scatter-gather", "tx-tcp",
                        "tx-generic-segmentation", "tx-udp-fragmentation",
                        "rx-checksum", "rx-gro", "rx-lro")):
        word, bit = index // 32, 1 << (index % 32)
        if before[4 * word] & bit and not before[4 * word + 3] & bit:
            request[2 * word] |= bit  # changeable: requested off
ioctl(8 + blocks * 8, "=II%dI" % len(request), 0x3b, blocks, *request)
after = words()

# the record written as the helper writes it
record.setdefault("devices", {})[device] = {
    "features": {"tx": "on"}, "requested": dict(
        (name, "on") for index, name in enumerate(names)
        if before[4 * (index // 32) + 1] & (1 << (index % 32)))}
encode = _json.make_encoder({}, None, _json.encode_basestring_ascii, None,
                            ":", ",", True, False, True)
data = ("".join(encode(record, 0)) + "\n").encode()
tmp = "%s/.live-state.json.%s.tmp" % (state, posix.urandom(6).hex())
fd = posix.open(tmp, posix.O_WRONLY | posix.O_CREAT | posix.O_EXCL, 0o600)
posix.write(fd, data)
posix.fsync(fd)
posix.close(fd)
posix.rename(tmp, state + "/live-state.json")
posix.close(lock)

syslog.openlog("netoffload", 0, syslog.LOG_USER)
syslog.syslog(syslog.LOG_INFO, "udev floor %s: %d bits requested off" % (
    device, sum(bin(w).count("1") for w in request[::2])))
