"""Every other-config convention of the pack, defined once.

- the policy keys: `netoffload-vif`, `netoffload-pif` and
  `netoffload-tag:<tag>`;
- the `ethtool-<feature>` keys xapi reads, and xapi's exact value rule;
- the bookkeeping keys on each object the pack wrote to
  (`netoffload-managed`, `netoffload-saved`) and their text forms;
- the owner key `<vm-uuid>/<devid>` that names a guest device's VIF in the
  local cache and the live-state record.

Light on purpose: the udev helper imports it (so json is imported only
where a bookkeeping text is read or written: it costs the helper's start).
"""
from netoffload.engine.features import FEATURES

PACK_PREFIX = "netoffload-"
KEY_VIF = "netoffload-vif"
KEY_PIF = "netoffload-pif"
# Policy kinds (set_policy kind=, get_policy "kind"): which key holds them.
POLICY_KIND_VIF = "vif"
POLICY_KIND_PIF = "pif"
TAG_PREFIX = "netoffload-tag:"
KEY_MANAGED = "netoffload-managed"
KEY_SAVED = "netoffload-saved"
ETHTOOL_PREFIX = "ethtool-"


def parse_managed(text):
    """`netoffload-managed` -> set of short names (unknown names dropped)."""
    if not text:
        return set()
    return set(name.strip() for name in text.split(",")
               if name.strip() in FEATURES)


def format_managed(names):
    return ",".join(sorted(names))


# What xapi itself accepts in an ethtool-<f> key (vif-real and the PIF
# path match these strings exactly; "TRUE" or " on" is ignored at plug).
XAPI_VALUES = {"on": "on", "true": "on", "off": "off", "false": "off"}


def xapi_value(raw):
    """"on"/"off" as xapi reads an ethtool-<f> key value, or None when
    xapi ignores it (it compares exactly: no case folding, no blanks)."""
    return XAPI_VALUES.get(raw) if isinstance(raw, str) else None


def _saved_items(text):
    """{short: (prior, written or None)} from `netoffload-saved`."""
    if not text:
        return {}
    import json  # noqa: PLC0415 (the udev helper: module doc)
    try:
        data = json.loads(text)
    except ValueError:
        return {}
    if not isinstance(data, dict):
        return {}
    result = {}
    for short, value in data.items():
        if short not in FEATURES:
            continue
        if value is None or isinstance(value, str):
            result[short] = (value, None)  # the old form: prior only
        elif isinstance(value, list) and len(value) == 2 and \
                (value[0] is None or isinstance(value[0], str)) and \
                isinstance(value[1], str):
            result[short] = (value[0], value[1])
    return result


def parse_saved(text):
    """`netoffload-saved` -> {short: prior value string or None}."""
    return dict((k, v[0]) for k, v in _saved_items(text).items())


def parse_written(text):
    """`netoffload-saved` -> {short: the value the pack wrote}, for the
    entries that record it (the old prior-only form does not)."""
    return dict((k, v[1]) for k, v in _saved_items(text).items()
                if v[1] is not None)


def format_saved(saved, written=None):
    """{short: prior} (+ {short: written}) -> `netoffload-saved` text:
    `[prior, written]` per feature, or the bare prior when the written
    value is unknown (records made before it was kept)."""
    written = written or {}
    data = dict((k, [v, written[k]] if written.get(k) is not None else v)
                for k, v in saved.items())
    import json  # noqa: PLC0415 (the udev helper: module doc)
    return json.dumps(data, sort_keys=True, separators=(",", ":"))


def taken_over(other_config):
    """Managed features whose `ethtool-<f>` no longer holds what the pack
    wrote (someone set or removed it since): theirs now, not ours."""
    managed = parse_managed(other_config.get(KEY_MANAGED))
    written = parse_written(other_config.get(KEY_SAVED))
    return set(f for f in managed if f in written
               and other_config.get(ETHTOOL_PREFIX + f) != written[f])


def explicit_keys(other_config):
    """{short: value} for ethtool-* keys the pack did not write, or that
    someone changed after the pack wrote them. The value is "on"/"off" when
    xapi honours it (exactly `on|true`, `off|false`), else the raw string."""
    managed = parse_managed(other_config.get(KEY_MANAGED)) - \
        taken_over(other_config)
    result = {}
    for feature in FEATURES:
        raw = other_config.get(ETHTOOL_PREFIX + feature)
        if raw is not None and feature not in managed:
            result[feature] = xapi_value(raw) or raw
    return result


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
