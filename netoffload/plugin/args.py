"""Plugin argument helpers: every plugin argument arrives as a string."""
from netoffload.errors import BadArgument

MAX_ARG_LEN = 1024
_TRUE = ("true", "yes", "on", "1")
_FALSE = ("false", "no", "off", "0", "")


def _check_len(key, value):
    if not isinstance(value, str):
        raise BadArgument("argument %s must be a string" % key)
    if len(value) > MAX_ARG_LEN:
        raise BadArgument("argument %s is too long (%d characters, at most %d)"
                          % (key, len(value), MAX_ARG_LEN))
    return value


def string_arg(args, key, default=None):
    value = args.get(key)
    if value is None:
        return default
    return _check_len(key, value)


def required_arg(args, key):
    value = string_arg(args, key)
    if value is None or value == "":
        raise BadArgument("missing argument %s" % key)
    return value


def bool_arg(args, key, default=False):
    value = string_arg(args, key)
    if value is None:
        return default
    low = value.strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise BadArgument("argument %s=%r is not a boolean (true/false, yes/no)"
                      % (key, value[:40]))


def int_arg(args, key, default, lo, hi):
    value = string_arg(args, key)
    if value is None or value == "":
        return default
    try:
        number = int(value.strip(), 10)
    except ValueError as err:
        raise BadArgument("argument %s=%r is not an integer" % (key, value[:40])) from err
    if number < lo or number > hi:
        raise BadArgument("argument %s=%d is out of range %d..%d"
                          % (key, number, lo, hi))
    return number


def reject_unknown(args, allowed):
    unknown = sorted(k for k in args if k not in allowed)
    if unknown and not allowed:
        raise BadArgument("unknown argument(s) %s: this function takes no "
                          "arguments" % ", ".join(repr(k[:40]) for k in unknown))
    if unknown:
        raise BadArgument("unknown argument(s) %s; valid: %s" % (
            ", ".join(repr(k[:40]) for k in unknown), ", ".join(sorted(allowed))))
