"""The pool-wide writer lease and the operation keys (docs/policy.md,
"Bookkeeping").

One writer at a time for the pool's database, whichever host it runs on:
`netoffload-lease` on the pool's other_config, JSON {"holder", "op",
"expires", "host", "pid", "start", "boot"}, taken with
`pool.add_to_other_config`, which xapi makes atomic (MAP_DUPLICATE_KEY:
someone holds it). host, pid, start and boot name the holding process:
its host's uuid, its pid, its start time (/proc/<pid>/stat, clock ticks
after boot) and its host's boot id, so that a pid reused after the holder
died is never taken for the holder.

- `held(client, holder, ttl_s=..., wait_s=...)`: a context manager that
  takes the lease (waiting at most `wait_s`, then `Busy` naming the
  holder), yields a `Lease` and gives it back. A lease past its expiry
  (its holder died), or whose holder is a process of this same host that
  is gone (`Holder.gone_here`), is taken over; so that two takers can never
  both think they took it, the taker first wins a break key unique to that
  lease (`netoffload-lease-break:<op>.<n>`, again an atomic add); a break
  key whose own taker died expires in turn and the next index is used. A
  holder on another host cannot be seen from here: its lease is taken
  over only after its expiry.
- `begin_op(client, lease)` / `end_op(client, lease)`: the operation key
  `netoffload-op:<id>` that says "op <id> is unfinished" while a database
  writer runs (and after it crashed, until the next writer settled the
  books that name it: writer.operation).

Every database writer takes the lease: apply, revert, set_policy and the
watcher's key writes. The lease's holder renews it (`Lease.renew_if_due`)
while it works so that a long operation is not taken over.
"""
import contextlib
import errno
import json
import os
import socket
import threading
import time

from netoffload import paths
from netoffload.errors import Busy, NotFound, XapiError
from netoffload.log import get_logger
from netoffload.pool import keys
from netoffload.pool.xapi import local_host_uuid

DEFAULT_TTL_S = 300.0
DEFAULT_WAIT_S = 20.0
# The longest wait a caller may ask for (the plugin's wait= argument): a
# lease's own default lifetime.
MAX_WAIT_S = 300
BREAK_TTL_S = 30.0
MAX_BREAK_INDEX = 8
MAX_LEASE_LEN = 512


def _env_seconds(name, default):
    """A tunable from the environment (tests shorten the lease), else
    `default`."""
    try:
        value = float(os.environ.get(name, ""))
    except ValueError:
        return default
    return value if 0 < value <= 3600 else default


def default_ttl():
    """NETOFFLOAD_LEASE_TTL seconds, default DEFAULT_TTL_S."""
    return _env_seconds("NETOFFLOAD_LEASE_TTL", DEFAULT_TTL_S)


def default_wait():
    """NETOFFLOAD_LEASE_WAIT seconds, default DEFAULT_WAIT_S."""
    return _env_seconds("NETOFFLOAD_LEASE_WAIT", DEFAULT_WAIT_S)


def _start_time(pid):
    """The start time of process `pid` (clock ticks after boot, field 22 of
    /proc/<pid>/stat); None when there is no such process or it is a
    zombie (dead, not yet reaped); "" when it cannot be told."""
    try:
        with open("/proc/%d/stat" % pid) as handle:
            text = handle.read(4096)
    except (IOError, OSError) as err:
        return None if err.errno in (errno.ENOENT, errno.ESRCH) else ""
    fields = text.rpartition(")")[2].split()
    if len(fields) < 20:
        return ""
    if fields[0] in ("Z", "X"):
        return None
    return fields[19]


def _this_host_uuid():
    """This host's uuid from the inventory, or None (then no holder is
    ever taken for one of this host's)."""
    try:
        return local_host_uuid()
    except NotFound:
        return None


class Holder(object):
    """The process that holds (or takes) a lease: its host's uuid, pid,
    start time and host boot id (None / "" when unknown)."""
    __slots__ = ("host", "pid", "start", "boot")

    def __init__(self, host, pid, start, boot):
        self.host = host
        self.pid = pid
        self.start = start
        self.boot = boot

    @classmethod
    def this_process(cls):
        pid = os.getpid()
        start = _start_time(pid)
        return cls(_this_host_uuid(), pid, start or "", paths.boot_id())

    def to_json(self):
        return {"host": self.host, "pid": self.pid, "start": self.start,
                "boot": self.boot}

    def gone_here(self, here):
        """Is this holder a process of host `here` (a Holder: this
        process) that no longer runs? Only when every part is known: its
        host is ours, and our host rebooted since it took the lease, or
        its pid is gone, or the pid now belongs to a process that started
        at another time (a reused pid). Anything unknown: not gone."""
        if not (here.host and self.host == here.host and self.boot and
                here.boot and isinstance(self.pid, int) and self.pid > 0
                and self.start):
            return False
        if self.boot != here.boot:
            return True  # this host rebooted: every process of it is gone
        start = _start_time(self.pid)
        if start == "":
            return False
        return start is None or start != self.start


def new_op_id():
    return os.urandom(8).hex()


def default_holder(what):
    """"<what>@<hostname>:<pid>": who holds a lease, for the Busy text."""
    return "%s@%s:%d" % (what, socket.gethostname(), os.getpid())


def _text(value):
    return value[:80] if isinstance(value, str) else ""


class LeaseInfo(object):
    """A lease value as read from the pool: holder, op, expires (None when
    the value is not a lease we can read: treated as expired)."""
    __slots__ = ("holder", "op", "expires", "raw", "process")

    def __init__(self, raw):
        self.raw = raw
        self.holder, self.op, self.expires = "?", None, None
        self.process = Holder(None, None, "", "")
        try:
            data = json.loads(raw) if len(raw) <= MAX_LEASE_LEN else None
        except ValueError:
            data = None
        if isinstance(data, dict):
            self.holder = str(data.get("holder", "?"))[:120]
            op = data.get("op")
            self.op = op if keys.valid_op_id(op) else None
            expires = data.get("expires")
            if isinstance(expires, (int, float)):
                self.expires = float(expires)
            pid = data.get("pid")
            self.process = Holder(
                _text(data.get("host")),
                pid if isinstance(pid, int) and not isinstance(pid, bool)
                else None,
                _text(data.get("start")), _text(data.get("boot")))

    def expired(self, now):
        return self.expires is None or self.expires <= now

    def gone(self, here):
        """Is its holder a process of this host (`here`) that is gone?"""
        return self.process.gone_here(here)

    @property
    def ident(self):
        """What names this lease instance in its break keys."""
        if self.op:
            return self.op
        return "x" + "%08x" % (hash(self.raw) & 0xffffffff)


class Lease(object):
    """The lease this process holds: pool ref, holder, op id, expiry."""

    def __init__(self, client, pool_ref, holder, op, ttl_s, clock,
                 process=None):
        self.client = client
        self.pool_ref = pool_ref
        self.holder = holder
        self.op = op
        self.process = process or Holder.this_process()
        self.ttl_s = ttl_s
        self.clock = clock
        self.expires = clock() + ttl_s
        self.value = self._value()
        self._renewing = threading.Lock()

    def _value(self):
        value = {"holder": self.holder, "op": self.op,
                 "expires": round(self.expires, 3)}
        value.update(self.process.to_json())
        return json.dumps(value, sort_keys=True, separators=(",", ":"))

    def renew_if_due(self, client=None):
        """Push the expiry out when less than half the TTL is left (the
        writer calls this between objects, from any of its threads, each
        passing the client its thread uses). If someone took the lease
        over meanwhile, Busy: stop writing."""
        if self.clock() < self.expires - self.ttl_s / 2:
            return
        with self._renewing:
            if self.clock() < self.expires - self.ttl_s / 2:
                return  # another thread just did it
            self._renew(client or self.client)

    def _renew(self, client):
        now = self.clock()
        config = client.call("pool.get_other_config", self.pool_ref)
        if config.get(keys.KEY_LEASE) != self.value:
            raise Busy("the pool's netoffload lease was taken over while "
                       "this operation ran; it stopped (its writes so far "
                       "are recorded and the next writer settles them)")
        old = self.value
        self.expires = now + self.ttl_s
        self.value = self._value()
        client.call("pool.remove_from_other_config", self.pool_ref,
                    keys.KEY_LEASE)
        try:
            client.call("pool.add_to_other_config", self.pool_ref,
                        keys.KEY_LEASE, self.value)
        except XapiError as err:
            if err.params and err.params[0] == "MAP_DUPLICATE_KEY":
                raise Busy("the pool's netoffload lease was taken while it "
                           "was being renewed") from err
            raise
        get_logger().debug("lease renewed (was %s)", old)


def _duplicate(err):
    return bool(err.params) and err.params[0] == "MAP_DUPLICATE_KEY"


def _try_add(client, pool_ref, key, value):
    """True when the add landed, False when the key was there."""
    try:
        client.call("pool.add_to_other_config", pool_ref, key, value)
        return True
    except XapiError as err:
        if _duplicate(err):
            return False
        raise


def _break_keys(config, ident=None):
    prefix = keys.LEASE_BREAK_PREFIX + (ident + "." if ident else "")
    return sorted(k for k in config if k.startswith(prefix))


def _take_over(client, pool_ref, info, clock, why="expired"):
    """Remove a dead writer's lease `info` (expired, or its process on this
    host gone: `why`) if this process wins its break key; True when it was
    removed (or is gone already)."""
    for index in range(1, MAX_BREAK_INDEX + 1):
        key = "%s%s.%d" % (keys.LEASE_BREAK_PREFIX, info.ident, index)
        if _try_add(client, pool_ref, key, "%.3f" % (clock() + BREAK_TTL_S)):
            break
        config = client.call("pool.get_other_config", pool_ref)
        try:
            stale = float(config.get(key, "0")) <= clock()
        except ValueError:
            stale = True
        if not stale:
            return False  # another taker is at work
    else:
        return False
    config = client.call("pool.get_other_config", pool_ref)
    if config.get(keys.KEY_LEASE) == info.raw:
        client.call("pool.remove_from_other_config", pool_ref, keys.KEY_LEASE)
        get_logger().warning("took over the netoffload lease of %s (op %s): "
                             "%s", info.holder, info.op, why)
    for old in _break_keys(config, info.ident):
        client.call("pool.remove_from_other_config", pool_ref, old)
    return True


def acquire(client, holder, ttl_s=None, wait_s=None,
            sleep=time.sleep, clock=time.time, op=None):
    """Take the lease (see the module docstring); a Lease, or Busy."""
    ttl_s = ttl_s or default_ttl()
    wait_s = default_wait() if wait_s is None else wait_s
    pool_ref = client.call("pool.get_all")[0]
    op = op or new_op_id()
    here = Holder.this_process()
    deadline = clock() + wait_s
    pause = 0.05
    while True:
        lease = Lease(client, pool_ref, holder, op, ttl_s, clock, here)
        if _try_add(client, pool_ref, keys.KEY_LEASE, lease.value):
            return lease
        config = client.call("pool.get_other_config", pool_ref)
        raw = config.get(keys.KEY_LEASE)
        if raw is None:
            continue  # released meanwhile
        info = LeaseInfo(raw)
        if info.expired(clock()):
            if _take_over(client, pool_ref, info, clock):
                continue
        elif info.gone(here):
            if _take_over(client, pool_ref, info, clock,
                          "its process on this host (pid %s) is gone"
                          % info.process.pid):
                continue
        if clock() >= deadline:
            raise Busy("another netoffload writer holds the pool's lease: %s "
                       "(op %s, until %s); nothing was changed, try again "
                       "when it has finished"
                       % (info.holder, info.op,
                          time.strftime("%H:%M:%S", time.gmtime(
                              info.expires or 0)) + " UTC"), info.holder)
        sleep(pause)
        pause = min(pause * 2, 1.0)


def release(lease):
    """Give the lease back if it is still ours."""
    client = lease.client
    try:
        config = client.call("pool.get_other_config", lease.pool_ref)
        if config.get(keys.KEY_LEASE) == lease.value:
            client.call("pool.remove_from_other_config", lease.pool_ref,
                        keys.KEY_LEASE)
        else:
            get_logger().warning("the netoffload lease was no longer ours "
                                 "at release (op %s)", lease.op)
        for old in _break_keys(config):
            client.call("pool.remove_from_other_config", lease.pool_ref, old)
    except XapiError as err:
        # it expires on its own; the next writer takes it over
        get_logger().warning("could not release the netoffload lease: %s",
                             err.message)


@contextlib.contextmanager
def held(client, holder, ttl_s=None, wait_s=None, sleep=time.sleep,
         clock=time.time):
    """`with held(client, holder) as lease:` the pool's writer lease."""
    lease = acquire(client, holder, ttl_s, wait_s, sleep, clock)
    try:
        yield lease
    finally:
        release(lease)


def begin_op(client, lease):
    """Add `netoffload-op:<id>`: op `lease.op` is unfinished from now."""
    client.call("pool.add_to_other_config", lease.pool_ref,
                keys.op_key(lease.op),
                json.dumps({"holder": lease.holder}, separators=(",", ":")))


def end_op(client, lease, op=None):
    """Remove `netoffload-op:<id>` (of `op`, default the lease's)."""
    client.call("pool.remove_from_other_config", lease.pool_ref,
                keys.op_key(op or lease.op))
