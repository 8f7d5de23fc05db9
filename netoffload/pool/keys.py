"""Every other-config convention of the pack, defined once.

- the policy keys: `netoffload-vif`, `netoffload-pif` and
  `netoffload-tag:<tag>`;
- the `ethtool-<feature>` keys xapi reads, and xapi's exact value rule;
- the bookkeeping key on each object the pack wrote to (`netoffload-book`,
  or during a replace its alternate generation `netoffload-book.2`), the
  old two-key form it replaces (`netoffload-managed` + `netoffload-saved`,
  still read), and the `Book` they parse into;
- the pool keys of the writers' protocol: the lease `netoffload-lease`
  and one `netoffload-op:<id>` per unfinished database-writing operation;
- the owner key `<vm-uuid>/<devid>` that names a guest device's VIF in the
  local cache and the live-state record.

The protocol itself (docs/policy.md, "Bookkeeping"): planning.py decides,
writer.py writes, lease.py serialises the writers.

Light on purpose: the udev helper imports it, so json is imported only
where a book is read or written, and no regular expression is compiled.
"""
from netoffload.engine.features import FEATURES

PACK_PREFIX = "netoffload-"
KEY_VIF = "netoffload-vif"
KEY_PIF = "netoffload-pif"
# Policy kinds (set_policy kind=, get_policy "kind"): which key holds them.
POLICY_KIND_VIF = "vif"
POLICY_KIND_PIF = "pif"
TAG_PREFIX = "netoffload-tag:"
ETHTOOL_PREFIX = "ethtool-"


# -- bookkeeping -----------------------------------------------------------------

# The book: compact JSON {"g": generation, "op": op id, "f": {feature:
# [prior, value] or [prior, value, was]}, "t": [feature, ...]}.
# prior: the key's value before the pack first wrote it (null: absent);
# value: what the pack wrote (or, while op is unfinished, is writing);
# was: while op is unfinished, what the key held before this op's write
# (the pack's earlier value), so a crash before the write is told apart
# from someone else's change; t: features someone changed after the pack
# wrote them (their decision: explicit while the key exists).
KEY_BOOK = "netoffload-book"
KEY_BOOK_ALT = "netoffload-book.2"
BOOK_KEYS = (KEY_BOOK, KEY_BOOK_ALT)
# The old two-key form (read, migrated at the next write).
KEY_MANAGED = "netoffload-managed"
KEY_SAVED = "netoffload-saved"
LEGACY_KEYS = (KEY_MANAGED, KEY_SAVED)
# Pool keys of the writers' protocol (lease.py).
KEY_LEASE = "netoffload-lease"
LEASE_BREAK_PREFIX = "netoffload-lease-break:"
OP_PREFIX = "netoffload-op:"

# A saved prior is restored into an `ethtool-<f>` key, so only what xapi
# could have held there is accepted back: a short printable string.
MAX_PRIOR_LEN = 64
MAX_BOOK_LEN = 4096
MAX_GENERATION = 1 << 30
_OP_ID_LEN = (6, 32)
_HEX = frozenset("0123456789abcdef")


def valid_prior(prior):
    """Could xapi have held this in an ethtool-<f> key (None: absent)?"""
    return prior is None or (isinstance(prior, str)
                             and len(prior) <= MAX_PRIOR_LEN
                             and all(" " <= c <= "~" for c in prior))


def valid_op_id(op):
    return isinstance(op, str) and \
        _OP_ID_LEN[0] <= len(op) <= _OP_ID_LEN[1] and set(op) <= _HEX


def op_key(op):
    return OP_PREFIX + op


def op_of_key(key):
    """The op id an `netoffload-op:<id>` key names, or None."""
    if key.startswith(OP_PREFIX) and valid_op_id(key[len(OP_PREFIX):]):
        return key[len(OP_PREFIX):]
    return None


def unfinished_ops(pool_config):
    """The op ids with a `netoffload-op:<id>` key on the pool."""
    return set(op for op in (op_of_key(k) for k in pool_config or {}) if op)


class _Record(object):
    """A small immutable record compared by value (namedtuple's job, without
    importing collections: the udev helper imports this module)."""
    __slots__ = ()

    def __init__(self, *values):
        for name, value in zip(self.__slots__, values):
            object.__setattr__(self, name, value)

    def __setattr__(self, name, value):
        raise AttributeError("%s is read-only" % type(self).__name__)

    def _values(self):
        return tuple(getattr(self, name) for name in self.__slots__)

    def __eq__(self, other):
        return type(other) is type(self) and other._values() == self._values()

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(self._values())

    def __repr__(self):
        return "%s%r" % (type(self).__name__, self._values())


class Entry(_Record):
    """One feature in a book: the prior, the value the pack wrote (None
    for an old-form record that did not keep it) and, while its op is
    unfinished, what the key held before (None: it held the prior)."""
    __slots__ = ("prior", "value", "was")

    def to_json(self):
        if self.was is not None:
            return [self.prior, self.value, self.was]
        return [self.prior, self.value]


class Book(object):
    """The bookkeeping of one object, as read from its other_config.

    `entries` {feature: Entry}; `taken` set of features someone changed
    after the pack wrote them; `op` the operation that last wrote it;
    `gen` its generation; `slot` the key it was read from (None: the old
    two-key form); `stale` book keys present that are not `slot` (a crash
    between the writes of a replace, or the old form left after a
    migration); `problems` [text]: why it cannot be trusted (an object
    with problems is left untouched and reported)."""
    __slots__ = ("entries", "taken", "op", "gen", "slot", "stale",
                 "problems")

    def __init__(self, entries=None, taken=(), op=None, gen=0, slot=None):
        self.entries = dict(entries or {})
        self.taken = set(taken)
        self.op = op
        self.gen = gen
        self.slot = slot
        self.stale = []
        self.problems = []

    @property
    def legacy(self):
        return self.slot is None and bool(self.entries or self.problems)

    def to_text(self):
        data = {"g": self.gen, "op": self.op,
                "f": dict((f, e.to_json()) for f, e in self.entries.items())}
        if self.taken:
            data["t"] = sorted(self.taken)
        import json  # noqa: PLC0415 (light for the udev helper: module doc)
        return json.dumps(data, sort_keys=True, separators=(",", ":"))

    def __repr__(self):
        return "Book(op=%r, g=%r, %r, taken=%r)" % (
            self.op, self.gen, self.entries, sorted(self.taken))


def _book_from_json(text, key):
    """Book from one book key's text; problems filled in on bad input."""
    book = Book(slot=key)
    if not isinstance(text, str) or len(text) > MAX_BOOK_LEN:
        book.problems.append("%s is longer than %d characters"
                             % (key, MAX_BOOK_LEN))
        return book
    import json  # noqa: PLC0415 (light for the udev helper: module doc)
    try:
        data = json.loads(text)
    except ValueError:
        book.problems.append("%s is not JSON" % key)
        return book
    if not isinstance(data, dict) or not isinstance(data.get("f"), dict):
        book.problems.append("%s is not a netoffload book" % key)
        return book
    gen, op = data.get("g"), data.get("op")
    if not isinstance(gen, int) or not 0 <= gen <= MAX_GENERATION:
        book.problems.append("%s: bad generation %r" % (key, str(gen)[:20]))
        gen = 0
    if op is not None and not valid_op_id(op):
        book.problems.append("%s: bad op id" % key)
        op = None
    book.gen, book.op = gen, op
    for feature, item in data["f"].items():
        entry = _entry(item)
        if feature not in FEATURES or entry is None:
            book.problems.append("%s: %s holds a value xapi could not have "
                                 "held; refused" % (key, _shown(feature)))
            continue
        book.entries[feature] = entry
    taken = data.get("t") or []
    if not isinstance(taken, list) or \
            not all(t in FEATURES for t in taken):
        book.problems.append("%s: bad taken-over list" % key)
    else:
        book.taken = set(taken)
    return book


def _shown(text):
    text = text if isinstance(text, str) else repr(text)
    return repr(text[:20] + ("..." if len(text) > 20 else ""))


def _entry(item):
    """Entry from [prior, value(, was)], or None when not valid."""
    if not isinstance(item, list) or len(item) not in (2, 3):
        return None
    prior, value = item[0], item[1]
    was = item[2] if len(item) == 3 else None
    if not valid_prior(prior) or value not in ("on", "off") or \
            (was is not None and was not in ("on", "off")):
        return None
    return Entry(prior, value, was)


def _legacy_book(other_config):
    """Book from the old `netoffload-managed` + `netoffload-saved`."""
    book = Book()
    managed_text = other_config.get(KEY_MANAGED)
    saved_text = other_config.get(KEY_SAVED)
    names = [n.strip() for n in (managed_text or "").split(",") if n.strip()]
    managed = [n for n in names if n in FEATURES]
    if not managed:
        return book
    if saved_text is None:
        saved = {}
    elif len(saved_text) > MAX_BOOK_LEN:
        book.problems.append("%s is longer than %d characters: the priors of "
                             "%s are refused" % (KEY_SAVED, MAX_BOOK_LEN,
                                                 ",".join(managed)))
        return book
    else:
        import json  # noqa: PLC0415 (light for the udev helper: module doc)
        try:
            saved = json.loads(saved_text)
        except ValueError:
            saved = None
        if not isinstance(saved, dict):
            book.problems.append("%s is not JSON: the priors of %s are "
                                 "unknown" % (KEY_SAVED, ",".join(managed)))
            return book
    for feature in managed:
        item = saved.get(feature)
        if item is None or isinstance(item, str):
            entry = Entry(item, None, None) if valid_prior(item) else None
        else:
            entry = _entry(item)
        if entry is None:
            book.problems.append("%s: %s holds a value xapi could not have "
                                 "held; refused" % (KEY_SAVED, feature))
            continue
        book.entries[feature] = entry
    return book


def read_book(other_config):
    """The Book of an object (an empty Book when it has none).

    Two generations present: the newer is the book, the other stale. A new
    book present: the old two-key form beside it is stale (a migration
    that crashed before removing it)."""
    other_config = other_config or {}
    books = [_book_from_json(other_config[k], k) for k in BOOK_KEYS
             if k in other_config]
    if books:
        books.sort(key=lambda b: (not b.problems, b.gen))
        book = books[-1]
        book.stale = [b.slot for b in books[:-1]] + \
            [k for k in LEGACY_KEYS if k in other_config]
        return book
    book = _legacy_book(other_config)
    if not book.entries and not book.problems:
        book.stale = [k for k in LEGACY_KEYS if k in other_config]
    return book


def book_keys_present(other_config):
    return [k for k in BOOK_KEYS + LEGACY_KEYS if k in (other_config or {})]


# What xapi itself accepts in an ethtool-<f> key (vif-real and the PIF
# path match these strings exactly; "TRUE" or " on" is ignored at plug).
XAPI_VALUES = {"on": "on", "true": "on", "off": "off", "false": "off"}


def xapi_value(raw):
    """"on"/"off" as xapi reads an ethtool-<f> key value, or None when
    xapi ignores it (it compares exactly: no case folding, no blanks)."""
    return XAPI_VALUES.get(raw) if isinstance(raw, str) else None


# How the key an entry names stands (Book.entries against the live map).
ENTRY_DONE = "done"          # holds the pack's value
ENTRY_PENDING = "pending"    # the pack's unfinished write (its op crashed
#                              or is this one): prior, `was` or absent
ENTRY_THEIRS = "theirs"      # someone else's change: theirs, it wins


def entry_state(entry, current, unfinished):
    """ENTRY_DONE / ENTRY_PENDING / ENTRY_THEIRS for an entry whose key
    holds `current`; `unfinished`: is the book's op unfinished?"""
    if entry.value is None:
        # the old prior-only form: the pack wrote on or off; anything else
        # there (or nothing) is someone else's
        return ENTRY_DONE if current in ("on", "off") else ENTRY_THEIRS
    if current == entry.value:
        return ENTRY_DONE
    if unfinished and current in (entry.prior, entry.was, None):
        return ENTRY_PENDING
    return ENTRY_THEIRS


# Why an explicit setting counts (Resolution overrides' "why").
WHY_BEFORE = "ethtool-%s=%s set before netoffload"
WHY_AFTER = "changed by someone after netoffload wrote it"
WHY_PROPERTY = "PIF property gro=%s"

class Explicit(_Record):
    """One ethtool-<f> key that is not the pack's: `value` "on"/"off" (or
    the raw string xapi ignores), `raw` as stored, `why` (WHY_*),
    `decided`: False for a VIF's on/true found before the pack managed the
    feature (a default, e.g. Xen Orchestra's stamp: a covering policy
    applies over it)."""
    __slots__ = ("value", "raw", "why", "decided")


def explicit_settings(other_config, unfinished_ops_=(), defaults_apply=True):
    """{feature: Explicit} for the ethtool-* keys the pack does not own.

    A key is the pack's while its book entry is done or pending. A key
    someone changed after the pack wrote it is a decision (WHY_AFTER). Any
    other key was there before: `off`/`false` (and values xapi ignores)
    are decisions; `on`/`true` is a default when `defaults_apply` (VIFs),
    a decision otherwise (PIFs)."""
    other_config = other_config or {}
    book = read_book(other_config)
    unfinished = book.op is not None and book.op in unfinished_ops_
    result = {}
    for feature in FEATURES:
        raw = other_config.get(ETHTOOL_PREFIX + feature)
        if raw is None:
            continue
        value = xapi_value(raw) or raw
        entry = book.entries.get(feature)
        if entry is not None:
            if entry_state(entry, raw, unfinished) != ENTRY_THEIRS:
                continue
            result[feature] = Explicit(value, raw, WHY_AFTER, True)
        elif feature in book.taken:
            result[feature] = Explicit(value, raw, WHY_AFTER, True)
        else:
            decided = not (defaults_apply and raw in ("on", "true"))
            result[feature] = Explicit(value, raw, WHY_BEFORE % (feature, raw),
                                       decided)
    return result


def managed_features(other_config, unfinished_ops_=()):
    """The features whose ethtool-* key the pack owns now."""
    book = read_book(other_config)
    unfinished = book.op is not None and book.op in unfinished_ops_
    return set(f for f, e in book.entries.items()
               if entry_state(e, (other_config or {}).get(ETHTOOL_PREFIX + f),
                              unfinished) != ENTRY_THEIRS)


def explicit_keys(other_config, unfinished_ops_=()):
    """{short: value} of every ethtool-* key the pack does not own
    (decisions and defaults alike; the value "on"/"off", or the raw string
    when xapi would ignore it)."""
    return dict((f, e.value) for f, e in
                explicit_settings(other_config, unfinished_ops_).items())


def ethtool_key(feature):
    """The other-config key xapi reads for a feature: `ethtool-<f>`."""
    return ETHTOOL_PREFIX + feature


def feature_of_key(key):
    """The feature an `ethtool-<f>` key names, or None."""
    if key.startswith(ETHTOOL_PREFIX) and key[len(ETHTOOL_PREFIX):] in FEATURES:
        return key[len(ETHTOOL_PREFIX):]
    return None


def policy_key(kind):
    """The policy key for a device kind: `netoffload-vif` or `netoffload-pif`."""
    return {POLICY_KIND_VIF: KEY_VIF, POLICY_KIND_PIF: KEY_PIF}[kind]


def kind_of_policy_key(key):
    """"vif" or "pif" for `netoffload-vif` / `netoffload-pif`, else None."""
    return {KEY_VIF: POLICY_KIND_VIF, KEY_PIF: POLICY_KIND_PIF}.get(key)


def tag_key(tag):
    """The pool key holding the VIF policy of VMs tagged `tag`."""
    return TAG_PREFIX + tag


def tag_of_key(key):
    """The tag a `netoffload-tag:<tag>` key names, or None."""
    return key[len(TAG_PREFIX):] if key.startswith(TAG_PREFIX) else None


def is_pack_key(key):
    """A key the pack owns (policy or bookkeeping)."""
    return key.startswith(PACK_PREFIX)


def owner_key(vm_uuid, devid):
    """`<vm-uuid>/<devid>`: which VIF a guest device belongs to."""
    return "%s/%d" % (vm_uuid.lower(), int(devid))
