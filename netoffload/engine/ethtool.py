"""Read and apply the eight offload features of a network device.

Reading uses the SIOCETHTOOL ioctl (netoffload.engine.ethtool_ioctl) and falls back
to parsing `ethtool -k` where the ioctl is unavailable. Applying sends one
ETHTOOL_SFEATURES request with every bit that differs (the bits `ethtool -K`
would send; the `ethtool -K` process where the ioctl is unavailable), then
reads back, sends again what did not land (bounded), and classifies each
feature.

One request carries every change, so the kernel works out its dependencies
(tx off takes tso, sg off takes gso) once, on the final set: the order of
the changes cannot matter. A wanted feature is also *pinned*: when it is
already as wanted only because the kernel forces it (gso off while sg is
off, yet still requested on), its request is set too, so that it stays as
wanted when the dependency comes back (a later restore of sg).

A short feature (tx, tso, ...) is a group of kernel bits (see features.py).
Its state is derived the way ethtool shows it: on if any of its bits is
active, fixed only if all of its bits are fixed, and absent (active None)
if the kernel has none of its bits (ufo since Linux 4.14).

Start-up matters (the udev helper applies through this module on every
bring-up): nothing heavier than errno at import; the text parser, the
ethtool binary and list_devices import theirs when used. Dicts keep their
insertion order (CPython 3.6+), so no OrderedDict.
"""
import errno

try:
    import _operator as operator  # the C module: operator.py is start-up time
except ImportError:  # pragma: no cover - every CPython has it
    import operator

from netoffload.engine.devices import validate_device
from netoffload.engine.ethtool_ioctl import (
    ETHTOOL_F_UNSUPPORTED,
    FALLBACK_ERRNOS,
    IoctlReader,
    decode,
)
from netoffload.engine.features import (
    FEATURES,
    LONG_TO_SHORT,
    NEEDS,
    OFF,
    ON,
    SINGLE_BIT_NAME,
    group_bits,
    short_for_kernel_bit,
    value_or_none,
)
from netoffload.errors import BadArgument, DeviceError
from netoffload.log import get_logger

ETHTOOL = "ethtool"
READ_TIMEOUT = 10.0
APPLY_TIMEOUT = 20.0
# ethtool's exit code when -K found nothing to change (ioctl path).
EXIT_NOTHING_CHANGED = 80
# requests sent again when some did not land (the first try included)
MAX_ROUNDS = 3
METHOD_IOCTL = "ioctl"
METHOD_ETHTOOL = "ethtool"

class FeatureState(tuple):
    """(active, fixed, requested), as a namedtuple would hold them (no
    collections import: see the module doc).

    active: True/False, or None when the kernel lacks every bit of the
    feature. requested: what was asked for, None when unknown or not
    changeable."""
    __slots__ = ()

    def __new__(cls, active, fixed, requested):
        return tuple.__new__(cls, (active, fixed, requested))

    # C-level getters, as namedtuple's: read thousands of times a boot
    active = property(operator.itemgetter(0))
    fixed = property(operator.itemgetter(1))
    requested = property(operator.itemgetter(2))

    def __repr__(self):
        return "FeatureState(active=%r, fixed=%r, requested=%r)" % self


ABSENT = FeatureState(None, False, None)
_STATE_CACHE = {}

# Apply outcomes per feature.
CHANGED = "changed"
UNCHANGED = "unchanged"
FIXED = "fixed"
UNSUPPORTED = "unsupported"
FORCED = "forced"
FAILED = "failed"
WOULD_CHANGE = "would-change"  # dry runs only


def check_device(name):
    """validate_device, plus a refusal of the trailing newline its `$`
    lets through."""
    validate_device(name)
    if name.endswith("\n"):
        raise BadArgument("invalid device name %r" % name)
    return name


def _onoff(active):
    return ON if active else OFF


def state_json(state):
    return {"active": state.active, "fixed": state.fixed,
            "requested": state.requested}


class DeviceFeatures(object):
    """Features of one device: `.features` {short: FeatureState}, `.kernel`
    {kernel name: FeatureState}, `.source` 'ioctl' or 'ethtool'."""

    def __init__(self, device, kernel, features, source, groups=None,
                 plans=None):
        self.device = device
        self.kernel = kernel
        self.features = features
        self.source = source
        self._groups = groups  # group_bits(kernel), when known
        self._plans = plans  # {wanted items: plan}, shared by like devices

    def bits(self, short):
        """The kernel names (in kernel order) that make up short."""
        if self._groups is None:
            self._groups = group_bits(self.kernel)
        return self._groups[short]

    def as_onoff(self):
        """{short: 'on'|'off'} for the features this kernel has (a fresh
        dict; computed once per shared features map)."""
        if self._plans is not None:
            onoff = self._plans.get(_ONOFF)
            if onoff is None:
                onoff = self._plans[_ONOFF] = self._onoff()
            return dict(onoff)
        return self._onoff()

    def _onoff(self):
        return dict((short, _onoff(state.active))
                    for short, state in self.features.items()
                    if state.active is not None)

    def fixed(self):
        return [s for s in FEATURES if self.features[s].fixed]

    def present(self, short):
        return self.features[short].active is not None

    def to_json(self, with_kernel=False):
        result = {"device": self.device, "source": self.source,
                  "features": self.as_onoff(),
                  "fixed": self.fixed(),
                  "absent": [s for s in FEATURES if not self.present(s)]}
        if with_kernel:
            result["kernel"] = dict((name, state_json(state))
                                    for name, state in self.kernel.items())
        return result

    def __repr__(self):
        return "DeviceFeatures(%r, %r)" % (self.device, self.as_onoff())


def derive(kernel, headers=None):
    """{short: FeatureState} for the eight features from kernel bits.

    `headers` are group lines from text with no bits under them (the old
    "Offload parameters" format); they count only where no bit is known.
    """
    groups = group_bits(kernel)
    result = {}
    for short in FEATURES:
        bits = [kernel[n] for n in groups[short]]
        if not bits:
            result[short] = (headers or {}).get(short, ABSENT)
            continue
        changeable = [b for b in bits if not b.fixed]
        result[short] = FeatureState(
            active=any(b.active for b in bits),
            fixed=not changeable,
            requested=any(b.requested for b in changeable)
            if changeable else None)
    return result


# -- the text of `ethtool -k` -------------------------------------------------

_TEXT_RE = []  # (title, line) compiled on first use: see the module doc


def _text_res():
    if not _TEXT_RE:
        import re  # noqa: PLC0415 (start-up: the module doc)
        _TEXT_RE.append(re.compile(
            r"^(?:Features|Offload parameters) for (\S+?):\s*$"))
        _TEXT_RE.append(re.compile(
            r"^(?P<indent>\s*)(?P<name>[A-Za-z0-9_.-]+): (?P<value>on|off)"
            r"(?: \[(?P<note>fixed|requested on|requested off)\])?\s*$"))
    return _TEXT_RE


def _text_state(value, note):
    active = value == "on"
    if note == "fixed":
        return FeatureState(active, True, None)
    if note == "requested on":
        return FeatureState(active, False, True)
    if note == "requested off":
        return FeatureState(active, False, False)
    return FeatureState(active, False, active)


def parse_features_text(text, device=None):
    """Parse `ethtool -k` output (modern or old format) into DeviceFeatures.

    Group headings are recognised by exact long name (features.LONG_TO_SHORT):
    a heading with one kernel bit stands for that bit; a heading over several
    bits is followed by the bits, indented.
    """
    title_re, line_re = _text_res()
    kernel = {}
    headers = {}
    group = None
    title_seen = False
    for line in text.splitlines():
        if not line.strip():
            continue
        title = title_re.match(line)
        if title:
            if title_seen:
                break  # a second device: not ours
            title_seen = True
            device = device or title.group(1)
            continue
        match = line_re.match(line)
        if not match:
            continue  # e.g. old ethtool's "Cannot get ...: Operation not supported"
        name = match.group("name")
        state = _text_state(match.group("value"), match.group("note"))
        if match.group("indent"):
            if group is not None:
                kernel[name] = state
            continue
        short = LONG_TO_SHORT.get(name)
        if short is None:
            group = None
            kernel[name] = state
            continue
        group = short
        headers[short] = state
        if short in SINGLE_BIT_NAME:
            kernel[SINGLE_BIT_NAME[short]] = state
    if not title_seen:
        raise DeviceError("not ethtool -k output: no 'Features for' line")
    return DeviceFeatures(device, kernel, derive(kernel, headers), "ethtool")


# -- reading ------------------------------------------------------------------

_DECODED = {}  # (names, words) -> (kernel, features, groups, memo): _from_words
_ONOFF = ("as_onoff",)  # the memo's key for as_onoff (wishes are tuples of pairs)
_DECODED_MAX = 256


def _from_words(device, names, words):
    """DeviceFeatures from GFEATURES words. Devices of one kind in one
    state have the same words (a boot's thousand vifs and taps: a few
    patterns), so the decoded maps are shared, not rebuilt per device;
    nobody changes a DeviceFeatures' maps."""
    key = (names, words)
    decoded = _DECODED.get(key)
    if decoded is None:
        if len(_DECODED) >= _DECODED_MAX:
            _DECODED.clear()
        first = _from_raw(device, decode(names, words))
        decoded = _DECODED[key] = (first.kernel, first.features,
                                   group_bits(first.kernel), {})
    return DeviceFeatures(device, decoded[0], decoded[1], "ioctl",
                          groups=decoded[2], plans=decoded[3])


def _from_raw(device, raw):
    # Only twelve distinct states exist: share them instead of building
    # ~65 tuples per device (this is the hot path of reading many devices).
    states = _STATE_CACHE
    kernel = {}
    for name, active, fixed, requested in raw:
        key = (active, fixed, requested)
        state = states.get(key)
        if state is None:
            state = states[key] = FeatureState(active, fixed, requested)
        kernel[name] = state
    return DeviceFeatures(device, kernel, derive(kernel), "ioctl")


def read_features_ethtool(device):
    """Read through the ethtool binary (one process)."""
    check_device(device)
    from netoffload import runner  # noqa: PLC0415 (start-up: module doc)
    result = runner.run([ETHTOOL, "-k", device], timeout=READ_TIMEOUT)
    if result.returncode != 0:
        raise DeviceError("cannot read features of %s: %s" % (
            device, result.stderr.strip() or "ethtool exit %d"
            % result.returncode), device)
    return parse_features_text(result.stdout, device)


class Reader(object):
    """Reads many devices with one ioctl socket, falling back per device."""

    def __init__(self):
        self._ioctl = None
        self._ioctl_broken = False
        self._no_write = False

    def _reader(self):
        if self._ioctl is None and not self._ioctl_broken:
            try:
                self._ioctl = IoctlReader()
            except OSError as err:
                get_logger().info("ethtool ioctl unavailable (%s); using the "
                                  "ethtool binary", err)
                self._ioctl_broken = True
        return self._ioctl

    def write(self, device, requests):
        """Set kernel-bit requests {name: bool} through ETHTOOL_SFEATURES:
        the ETHTOOL_F_* flags, or None when the ioctl is unavailable here
        (the caller runs `ethtool -K`). DeviceError if it fails."""
        writer = self._reader()
        if writer is None or self._no_write:
            return None
        try:
            return writer.write(device, requests)
        except ValueError as err:  # a name the ioctl's table lacks
            get_logger().info("ETHTOOL_SFEATURES cannot name it on %s (%s); "
                              "using the ethtool binary", device, err)
            return None
        except OSError as err:
            if err.errno == errno.ENODEV:
                raise DeviceError("no such device %s" % device, device) from err
            if err.errno in FALLBACK_ERRNOS:
                get_logger().info("ETHTOOL_SFEATURES unavailable on %s (%s); "
                                  "using the ethtool binary", device, err)
                self._no_write = True
                return None
            raise DeviceError("cannot set features of %s: %s"
                              % (device, err), device) from err

    def read(self, device):
        check_device(device)
        reader = self._reader()
        if reader is not None:
            try:
                return _from_words(device, *reader.read_words(device))
            except OSError as err:
                if err.errno == errno.ENODEV:
                    raise DeviceError("no such device %s" % device, device) from err
                if err.errno not in FALLBACK_ERRNOS:
                    raise DeviceError("cannot read features of %s: %s"
                                      % (device, err), device) from err
        return read_features_ethtool(device)

    def close(self):
        if self._ioctl is not None:
            self._ioctl.close()
            self._ioctl = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def read_features(device):
    """DeviceFeatures of one device; DeviceError if it does not exist."""
    with Reader() as reader:
        return reader.read(device)


def read_many(devices):
    """{device: DeviceFeatures}; devices that vanish meanwhile are left out."""
    result = {}
    with Reader() as reader:
        for device in devices:
            try:
                result[device] = reader.read(device)
            except DeviceError as err:
                get_logger().info("skipping %s: %s", device, err.message)
    return result


def list_devices():
    """Interface names of the current network namespace, in index order."""
    import socket  # noqa: PLC0415 (start-up: the module doc)
    return [name for _, name in sorted(socket.if_nameindex())]


# -- applying -----------------------------------------------------------------

def check_wanted(wanted):
    """Validate {short: on|off|true|false}; return it normalised."""
    if not isinstance(wanted, dict):
        raise BadArgument("wanted features must be a mapping")
    result = {}
    for short, value in wanted.items():
        if short not in FEATURES:
            raise BadArgument("unknown feature %r; valid features are %s"
                              % (short, ", ".join(FEATURES)))
        norm = value_or_none(value)
        if norm is None:
            raise BadArgument("invalid value %r for %s; valid values are on, "
                              "off, true, false" % (value, short))
        result[short] = norm
    return result


def _requests_are(current, short, value):
    """True if every changeable bit of short is requested as value (and
    there is at least one)."""
    want = value == ON
    bits = [current.kernel[n]
            for n in current.bits(short)]
    changeable = [b for b in bits if not b.fixed]
    return bool(changeable) and all(b.requested is want for b in changeable)


def forced_by(short, value, live, targets):
    """True if the kernel keeps short from value because of what targets
    set: it needs a feature (NEEDS) that targets turn off and that is off
    (tx=off,tso=on cannot have tso on). Reported as forced, not failed;
    a status that compares live with desired can ask the same (live and
    targets {short: on|off})."""
    return value == ON and any(
        targets.get(need) == OFF and live.get(need) == OFF
        for need in NEEDS.get(short, ()))


def _present(current, wanted, status):
    """(short, state) of each wanted feature in table order that this
    kernel has; the others are marked unsupported in `status`."""
    for short in FEATURES:
        if short not in wanted:
            continue
        state = current.features[short]
        if state.active is None:
            status[short] = UNSUPPORTED
        else:
            yield short, state


def plan(current, wanted):
    """({short: value} to request, {short: status}) without touching
    anything (fresh dicts: callers change them).

    status is unchanged, fixed (differs but cannot change), unsupported
    (absent on this kernel), would-change, failed (requested already, yet
    the kernel keeps it) or forced (the kernel keeps it because of another
    wanted feature). A feature already as wanted whose request differs is
    requested too (pinned; status unchanged).
    """
    plans = current._plans
    if plans is None:
        return _plan(current, wanted)
    key = tuple(sorted(wanted.items()))
    cached = plans.get(key)
    if cached is None:
        cached = plans[key] = _plan(current, wanted)
    return dict(cached[0]), dict(cached[1])


def _plan(current, wanted):
    to_change = {}
    status = {}
    live = current.as_onoff()
    held = []
    for short, state in _present(current, wanted, status):
        value = wanted[short]
        requested = _requests_are(current, short, value)
        if live[short] == value:
            status[short] = UNCHANGED
            if not requested and not state.fixed:
                to_change[short] = value  # pinned: see the module doc
        elif state.fixed:
            status[short] = FIXED
        elif requested:
            held.append(short)
        else:
            status[short] = WOULD_CHANGE
            to_change[short] = value
    for short in held:
        value = wanted[short]
        if any(to_change.get(need) == ON for need in NEEDS.get(short, ())):
            # its dependency comes on in the same request
            status[short] = WOULD_CHANGE
            to_change[short] = value
        elif forced_by(short, value, live, wanted):
            status[short] = FORCED
        else:
            # Already requested, yet the kernel keeps it (macvlan follows
            # its lower device): another request changes nothing.
            status[short] = FAILED
    return to_change, status


def _held_errors(status):
    held = sorted(s for s, st in status.items() if st == FAILED)
    if not held:
        return []
    return ["the kernel keeps %s as it is although the change is requested"
            % ", ".join(held)]


class ApplyResult(object):
    """What apply_features did to one device."""

    def __init__(self, device, features, before, after, ran_command=False,
                 command=None, forced=None, errors=None, dry_run=False,
                 forced_bits=None, notes=None, method=None, rounds=0):
        self.device = device
        self.features = features      # {short: status}
        self.before = before          # {short: on|off}
        self.after = after            # {short: on|off}
        self.ran_command = ran_command
        self.command = command
        self.forced = forced or {}    # {short: new value}
        self.errors = errors or []
        self.dry_run = dry_run
        self.forced_bits = forced_bits or {}  # {kernel bit: new value}
        self.notes = notes or []      # what else happened, not failures
        self.method = method          # "ioctl" or "ethtool" when a request ran
        self.rounds = rounds          # requests sent (more when one did not land)

    @property
    def ok(self):
        return FAILED not in self.features.values()

    @property
    def changed(self):
        return dict((s, self.after[s]) for s, st in self.features.items()
                    if st in (CHANGED, FORCED) and s in self.after)

    def to_json(self):
        """A JSON-ready dict."""
        return {"device": self.device, "features": dict(self.features),
                "before": dict(self.before), "after": dict(self.after),
                "forced": dict(self.forced),
                "forced_bits": dict(self.forced_bits),
                "ran_command": self.ran_command,
                "command": self.command, "errors": list(self.errors),
                "dry_run": self.dry_run, "ok": self.ok,
                "notes": list(self.notes), "method": self.method}

    def __repr__(self):
        return "ApplyResult(%r, %r)" % (self.device, self.features)


def plan_features(device, wanted, reader=None):
    """What apply_features would do, as an ApplyResult with dry_run set;
    the device is only read."""
    check_device(device)
    wanted = check_wanted(wanted)
    with _reader_for(reader) as reader:
        current = reader.read(device)
        _, status = plan(current, wanted)
        return _unchanged(device, current, status, dry_run=True)


def apply_features(device, wanted, reader=None, current=None,
                   planned=None):
    """Bring `device` to `wanted` {short: on|off} with one request (more
    only for what did not land).

    current: the DeviceFeatures just read, when the caller has them;
    planned: plan(current, wanted) when it has that too.
    Raises BadArgument for a bad name or wish (before anything runs) and
    DeviceError if the device is missing.
    """
    check_device(device)
    wanted = check_wanted(wanted)
    with _reader_for(reader) as reader:
        if current is None:
            current = reader.read(device)
            planned = None
        to_change, status = planned or plan(current, wanted)
        if not to_change:
            return _unchanged(device, current, status, dry_run=False)
        return _execute(device, reader, current, list(to_change.items()),
                        wanted, status, commanded=set(to_change))


def _unchanged(device, current, status, dry_run):
    """The result of a call that ran no command: before and after are the
    state read."""
    before = current.as_onoff()
    return ApplyResult(device, status, before, dict(before), dry_run=dry_run,
                       errors=_held_errors(status))


def requested_bits(current, shorts):
    """{kernel bit: 'on'|'off'} requested now for the changeable bits of
    `shorts`: what restore_features needs to put requests back exactly."""
    result = {}
    for short in shorts:
        for name in current.bits(short):
            state = current.kernel[name]
            if not state.fixed and state.requested is not None:
                result[name] = _onoff(state.requested)
    return result


def restore_features(device, features, bits=None, reader=None):
    """Put recorded state back: `features` {short: on|off} as it was active,
    `bits` {kernel bit: on|off} as it was requested (see requested_bits).

    Requests are restored bit by bit, so a change the kernel refused (which
    still altered the request) is undone too; features without recorded
    bits fall back to their short name.
    """
    check_device(device)
    features = check_wanted(features)
    bits = dict(bits or {})
    with _reader_for(reader) as reader:
        current = reader.read(device)
        pairs = []
        status = {}
        for short, state in _present(current, features, status):
            recorded_bits = [b for b in current.bits(short)
                             if b in bits]
            if recorded_bits:
                for name in recorded_bits:
                    bit = current.kernel[name]
                    if not bit.fixed and bit.requested is not (
                            bits[name] == ON):
                        pairs.append((name, bits[name]))
            elif _onoff(state.active) != features[short] and not state.fixed:
                pairs.append((short, features[short]))
            if state.fixed and _onoff(state.active) != features[short]:
                status[short] = FIXED
        if not pairs:
            before = current.as_onoff()
            forced = {}
            for short in features:
                if short in status:
                    continue
                if before.get(short) == features[short]:
                    status[short] = UNCHANGED
                elif any(short_for_kernel_bit(b) == short for b in bits):
                    # its requests are as recorded: the kernel keeps it
                    # for a feature that stays changed
                    status[short] = FORCED
                    forced[short] = before[short]
                else:
                    status[short] = FAILED
            return ApplyResult(device, status, before, dict(before),
                               forced=forced, errors=_held_errors(status))
        return _execute(device, reader, current, pairs, features, status,
                        commanded=set(features), requests_decide=True)


class _Borrowed(object):
    """A caller's Reader in a with statement: not closed at the end."""

    def __init__(self, reader):
        self.reader = reader

    def __enter__(self):
        return self.reader

    def __exit__(self, *exc):
        return False


def _reader_for(reader):
    """`with _reader_for(reader) as r`: the caller's reader, else a new
    one closed at the end (a class, not contextlib: the module doc)."""
    return Reader() if reader is None else _Borrowed(reader)


def _bit_requests(current, pairs):
    """{kernel bit: bool} for (name, value) pairs, name a short feature or a
    kernel bit: the changeable bits, as `ethtool -K` sends them."""
    requests = {}
    for name, value in pairs:
        bits = current.bits(name) if name in FEATURES else \
            [name] if name in current.kernel else []
        for bit in bits:
            if not current.kernel[bit].fixed:
                requests[bit] = value == ON
    return requests


def _landed(current, name, value):
    """True if the request (name, value) shows in the device read."""
    if name in FEATURES:
        return _requests_are(current, name, value) or all(
            current.kernel[b].fixed
            for b in current.bits(name))
    state = current.kernel.get(name)
    return state is None or state.fixed or state.requested is (value == ON)


def _send(device, reader, current, pairs, errors):
    """One request for pairs: ETHTOOL_SFEATURES, else `ethtool -K`.
    (method, argv of the ethtool equivalent)."""
    argv = [ETHTOOL, "-K", device]
    for name, value in pairs:
        argv += [name, value]
    requests = _bit_requests(current, pairs)
    flags = reader.write(device, requests) if requests else 0
    if flags is not None:
        if flags & ETHTOOL_F_UNSUPPORTED:
            errors.append("the kernel ignored a request %s cannot change"
                          % device)
        return METHOD_IOCTL, argv
    from netoffload import runner  # noqa: PLC0415 (start-up: module doc)
    done = runner.run(argv, timeout=APPLY_TIMEOUT)
    if done.returncode not in (0, EXIT_NOTHING_CHANGED):
        errors.append("ethtool -K exit %d: %s" % (
            done.returncode, done.stderr.strip()))
    return METHOD_ETHTOOL, argv


def _classify(short, before, after, target, targets):
    moved = after.get(short) != before.get(short)
    if after.get(short) == target:
        return CHANGED if moved else UNCHANGED
    if forced_by(short, target, after, targets):
        return FORCED
    return FAILED


def _execute(device, reader, current, pairs, targets, status, commanded,
             requests_decide=False):
    """Send `pairs` in one request, re-read, send again what did not land
    (at most MAX_ROUNDS in all), classify every feature.

    requests_decide (a restore): a feature whose requests are all back as
    recorded is restored even where the kernel keeps it otherwise (forced:
    it follows a feature that stays changed)."""
    errors = [e for e in _held_errors(status)]
    sent = list(pairs)
    method = argv = None
    reread = current
    rounds = 0
    while pairs and rounds < MAX_ROUNDS:
        rounds += 1
        sent_method, sent_argv = _send(device, reader, reread, pairs, errors)
        if method is None:
            method, argv = sent_method, sent_argv
        reread = reader.read(device)
        pairs = [(n, v) for n, v in pairs if not _landed(reread, n, v)]
    before = current.as_onoff()
    after = reread.as_onoff()
    forced = {}
    for short in FEATURES:
        if status.get(short) in (UNSUPPORTED, FIXED):
            continue
        if short in targets:
            status[short] = _classify(short, before, after, targets[short],
                                      targets)
        elif after.get(short) != before.get(short):
            status[short] = FORCED
        if requests_decide and status.get(short) == FAILED and all(
                _landed(reread, n, v) for n, v in sent
                if n == short or short_for_kernel_bit(n) == short):
            status[short] = FORCED
        if status.get(short) == FORCED:
            forced[short] = after[short]
    # Kernel bits outside the groups we asked for that moved anyway: on
    # 6.x `tx off` drops the tcp bits but leaves tx-tcp-accecn-segmentation,
    # so ethtool (and we) still show tso on; the bits tell the full story.
    old_kernel = current.kernel
    forced_bits = {} if reread.kernel is old_kernel else dict(
        (name, _onoff(state.active)) for name, state in reread.kernel.items()
        if name in old_kernel
        and old_kernel[name].active != state.active
        and short_for_kernel_bit(name) not in commanded)
    failed = sorted(s for s, st in status.items() if st == FAILED)
    if failed:
        errors.append("%s did not reach the wanted state: %s"
                      % (device, ", ".join(failed)))
        get_logger().warning("%s: could not set %s", device, ", ".join(
            "%s %s" % (s, targets[s]) for s in failed))
    if forced or forced_bits:
        # debug: every caller reports `forced` itself (a boot pass would
        # log a line per device)
        get_logger().debug("%s: turned %s as a dependency", device, ", ".join(
            "%s %s" % item for item in sorted(forced.items())
            + sorted(forced_bits.items())))
    return ApplyResult(device, status, before, after, ran_command=True,
                       command=argv, forced=forced, errors=errors,
                       forced_bits=forced_bits, method=method, rounds=rounds)
