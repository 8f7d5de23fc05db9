"""The eight offload features: short names, ethtool long names, kernel bits.

Pure data and pure functions; no I/O.

The short names are the `ethtool -K` aliases, the xapi `ethtool-<f>` key
suffixes and the JSON keys. Each short name stands for a group of kernel
feature bits, matched the way ethtool's `off_flag_def` table does it (shell
patterns over the kernel's ETH_SS_FEATURES strings), so that
`tx` covers every `tx-checksum-*` bit and `tso` every `tx-tcp*-segmentation`
bit, including ones newer kernels add (6.18 has tx-tcp-accecn-segmentation).
"""
FEATURES = ("rx", "tx", "sg", "tso", "ufo", "gso", "gro", "lro")

# xenopsd copies only these ethtool-* keys from VIF.other_config to the
# hotplug script; ethtool-gro/lro on a VIF are dropped by xapi.
VIF_XAPI_FEATURES = ("rx", "tx", "sg", "tso", "ufo", "gso")

ON = "on"
OFF = "off"
VALUES = (ON, OFF)

# The group headings ethtool prints (`ethtool -k`, and the old
# "Offload parameters for X:" format), one per ethtool off-flag.
LONG_TO_SHORT = {
    "rx-checksumming": "rx",
    "tx-checksumming": "tx",
    "scatter-gather": "sg",
    "tcp-segmentation-offload": "tso",
    "udp-fragmentation-offload": "ufo",
    "generic-segmentation-offload": "gso",
    "generic-receive-offload": "gro",
    "large-receive-offload": "lro",
    # ethtool's other off-flags: not ours, but they are headings, not bits.
    "rx-vlan-offload": "rxvlan",
    "tx-vlan-offload": "txvlan",
    "ntuple-filters": "ntuple",
    "receive-hashing": "rxhash",
}
SHORT_TO_LONG = dict((short, long_name)
                     for long_name, short in LONG_TO_SHORT.items())

# Short name -> shell patterns over kernel feature names (ethtool's table).
KERNEL_PATTERNS = {
    "rx": ("rx-checksum",),
    "tx": ("tx-checksum-*",),
    "sg": ("tx-scatter-gather*",),
    "tso": ("tx-tcp*-segmentation",),
    "ufo": ("tx-udp-fragmentation",),
    "gso": ("tx-generic-segmentation",),
    "gro": ("rx-gro",),
    "lro": ("rx-lro",),
    "rxvlan": ("rx-vlan-hw-parse",),
    "txvlan": ("tx-vlan-hw-insert",),
    "ntuple": ("rx-ntuple-filter",),
    "rxhash": ("rx-hashing",),
}

# What the kernel (netdev_fix_features) needs on for a feature to be on:
# TSO needs checksumming and scatter-gather, software GSO needs
# scatter-gather (and UFO, gone since 4.14, needed both). A policy that
# turns the need off gets the feature off too: reported as forced.
NEEDS = {"tso": ("tx", "sg"), "gso": ("sg",), "ufo": ("tx", "sg")}

# When a group has exactly one kernel bit, ethtool prints that bit under the
# group's long name; this is the bit's kernel name.
SINGLE_BIT_NAME = dict((short, patterns[0])
                       for short, patterns in KERNEL_PATTERNS.items()
                       if not any(c in patterns[0] for c in "*?["))

_VALUE_ALIASES = {"on": ON, "true": ON, "off": OFF, "false": OFF}


_SPLIT = {}  # pattern -> its parts around "*"


def _star_match(name, pattern):
    """What fnmatchcase gives for patterns whose only wildcard is `*` (all
    of KERNEL_PATTERNS), without compiling a regex: the udev helper's
    start-up would pay for that on every device."""
    parts = _SPLIT.get(pattern)
    if parts is None:
        parts = _SPLIT[pattern] = pattern.split("*")
    if len(parts) == 1:
        return name == pattern
    head, tail = parts[0], parts[-1]
    if len(name) < len(head) + len(tail) or not name.startswith(head) \
            or not name.endswith(tail):
        return False
    position, end = len(head), len(name) - len(tail)
    for middle in parts[1:-1]:
        found = name.find(middle, position, end)
        if found < 0:
            return False
        position = found + len(middle)
    return True


_SHORT_OF = {}  # kernel name -> short group: a few dozen names, asked often


def short_for_kernel_bit(kernel_name):
    """The short group (ours or ethtool's other off-flags) of a kernel bit."""
    try:
        return _SHORT_OF[kernel_name]
    except KeyError:
        pass
    found = None
    for short, patterns in KERNEL_PATTERNS.items():
        if any(_star_match(kernel_name, p) for p in patterns):
            found = short
            break
    if len(_SHORT_OF) < 4096:
        _SHORT_OF[kernel_name] = found
    return found


def kernel_bits_for(short, kernel_names):
    """The kernel feature names (in kernel order) that make up `short`."""
    return list(group_bits(kernel_names)[short])


_GROUPS = {}  # kernel names -> groups; a dict, not functools (start-up)
_HEADS = []  # [(short, pattern, the pattern's text before its first *)]


def _pattern_heads():
    if not _HEADS:
        _HEADS.extend((short, pattern, pattern.split("*", 1)[0])
                      for short, patterns in KERNEL_PATTERNS.items()
                      for pattern in patterns)
    return _HEADS


def group_bits(kernel_names):
    """{short: (kernel names,)} for every group; cached, because the kernel's
    feature list is the same for every device."""
    kernel_names = tuple(kernel_names)
    groups = _GROUPS.get(kernel_names)
    if groups is None:
        if len(_GROUPS) >= 8:
            _GROUPS.clear()
        members = dict((short, []) for short in KERNEL_PATTERNS)
        heads = _pattern_heads()
        for name in kernel_names:
            if name[:3] not in ("tx-", "rx-"):
                continue  # every pattern starts so: most bits end here
            for short, pattern, head in heads:
                # the head test is _star_match's first, without the call
                if name.startswith(head) and _star_match(name, pattern) \
                        and name not in members[short]:
                    members[short].append(name)
        groups = _GROUPS[kernel_names] = dict(
            (short, tuple(names)) for short, names in members.items())
    return groups


def value_or_none(value):
    """'on'/'true' -> 'on', 'off'/'false' -> 'off' (case and blanks ignored).

    None for anything else; policy.normalise_value raises instead.
    """
    if isinstance(value, bool):
        return ON if value else OFF
    if not isinstance(value, str):
        return None
    return _VALUE_ALIASES.get(value.strip().lower())

