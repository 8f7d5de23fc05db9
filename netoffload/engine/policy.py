"""Policy strings (docs/policy.md, "Policies"): parse, validate, canonicalise.

A policy is a profile name (`all-off`, `tx-off`, `none`) or a comma list of
`feature=value` items such as `tx=off,sg=off`. Values on/off/true/false are
normalised to on/off. Blanks around tokens are ignored; keys and values are
case-insensitive. Anything else is a BadArgument that names the bad token and
lists the valid ones.
"""
from netoffload.engine.features import FEATURES, OFF, value_or_none
from netoffload.errors import BadArgument

NONE = "none"

PROFILES = {
    # The recipe of the original scripts.
    "all-off": dict((f, OFF) for f in FEATURES),
    # The known fix for FreeBSD (pfSense / OPNsense) guests.
    "tx-off": {"tx": OFF},
    # Change nothing here (an opt-out).
    NONE: {},
}

MAX_POLICY_LEN = 512
_VALID_VALUES = "on, off, true, false"


def _valid_forms():
    return ("profiles: %s; or a comma list of feature=value with features %s "
            "and values %s" % (", ".join(sorted(PROFILES)), ", ".join(FEATURES),
                               _VALID_VALUES))


def normalise_value(value):
    """'true'/'on' -> 'on', 'false'/'off' -> 'off'; anything else raises."""
    result = value_or_none(value)
    if result is None:
        raise BadArgument("invalid value %r: valid values are %s"
                          % (_shown(value), _VALID_VALUES))
    return result


def _shown(token):
    text = token if isinstance(token, str) else repr(token)
    return text if len(text) <= 40 else text[:40] + "..."


class Policy(object):
    """A parsed policy: `.features` {short: 'on'|'off'}, `.is_none`, `.text`."""

    __slots__ = ("features", "profile")

    def __init__(self, features, profile=None):
        self.features = dict(features)
        self.profile = profile

    @property
    def is_none(self):
        return not self.features

    @property
    def text(self):
        """Canonical form: the profile name, or items in FEATURES order."""
        if self.profile is not None:
            return self.profile
        if not self.features:
            return NONE
        return ",".join("%s=%s" % (f, self.features[f])
                        for f in FEATURES if f in self.features)

    def __str__(self):
        return self.text

    def __repr__(self):
        return "Policy(%r)" % self.text

    def __eq__(self, other):
        return isinstance(other, Policy) and self.features == other.features

    def __ne__(self, other):
        return not self.__eq__(other)

    def __hash__(self):
        return hash(tuple(sorted(self.features.items())))


def parse_policy(text):
    """Parse a policy string into a Policy, or raise BadArgument."""
    if not isinstance(text, str):
        raise BadArgument("a policy must be a string, not %s"
                          % type(text).__name__)
    if len(text) > MAX_POLICY_LEN:
        raise BadArgument("policy is too long (%d characters, at most %d)"
                          % (len(text), MAX_POLICY_LEN))
    stripped = text.strip()
    if not stripped:
        raise BadArgument("empty policy; valid %s" % _valid_forms())
    lowered = stripped.lower()
    if lowered in PROFILES:
        return Policy(PROFILES[lowered], profile=lowered)
    if "=" not in stripped and "," not in stripped:
        raise BadArgument("unknown profile %r; valid %s"
                          % (_shown(stripped), _valid_forms()))
    features = {}
    for item in stripped.split(","):
        item = item.strip()
        if not item:
            raise BadArgument("empty item in policy %r; valid %s"
                              % (_shown(stripped), _valid_forms()))
        if "=" not in item:
            if item.lower() in PROFILES:
                raise BadArgument("profile %r cannot be combined with other "
                                  "items; valid %s" % (item, _valid_forms()))
            raise BadArgument("item %r is not feature=value; valid %s"
                              % (_shown(item), _valid_forms()))
        key, _, value = item.partition("=")
        key = key.strip().lower()
        if key not in FEATURES:
            raise BadArgument("unknown feature %r; valid features are %s"
                              % (_shown(key), ", ".join(FEATURES)))
        value = normalise_value(value)
        if features.get(key, value) != value:
            raise BadArgument("feature %r is given twice with different "
                              "values (%s and %s)" % (key, features[key], value))
        features[key] = value
    return Policy(features)


def merge(base, override):
    """Features of `base` with those of `override` on top (both Policy)."""
    merged = dict(base.features)
    merged.update(override.features)
    return Policy(merged)
