"""JSON for small state files without importing `json`.

`json` imports `re` (and with it enum, functools, collections...), which is
most of what the udev helper would spend beyond a bare Python start. The
live-state record it reads and writes on every bring-up is small and made
of objects, strings, numbers, true/false/null, so this module handles it:

- `dumps(value)` gives exactly `json.dumps(value, indent=1, sort_keys=True)`
  (ensure_ascii escapes included; tests compare the two);
- `dumps_compact(value)` gives exactly `json.dumps(value, sort_keys=True,
  separators=(",", ":"))`, through json's C encoder (`_json`) when it is
  there;
- `loads(text)` parses strict JSON with json's own C scanner (`_json`,
  which does not import json: the same values, a fraction of a pure
  Python parse), else with the parser below; on anything it does not take
  (or text larger than LITE_LIMIT for the Python parser, where the C
  parser is faster than the import is slow) it hands the text to
  `json.loads`, so it never accepts more than `json` does and fails with
  the same ValueError.
"""

LITE_LIMIT = 32 * 1024

_SHORT_ESCAPES = {'"': '\\"', "\\": "\\\\", "\n": "\\n", "\r": "\\r",
                  "\t": "\\t", "\b": "\\b", "\f": "\\f"}
_UNESCAPE = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f",
             "n": "\n", "r": "\r", "t": "\t"}
_NUMBER_CHARS = frozenset("0123456789+-.eE")
_DIGITS = frozenset("0123456789")
_BLANK = " \t\n\r"


class _NotLite(Exception):
    """Text this parser leaves to json.loads."""


# -- writing ------------------------------------------------------------------

def _string(text):
    if all(" " <= c <= "~" and c not in '"\\' for c in text):
        return '"%s"' % text
    out = []
    for c in text:
        if c in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[c])
        elif " " <= c <= "~":
            out.append(c)
        else:
            code = ord(c)
            if code > 0xFFFF:  # a surrogate pair, as json writes it
                code -= 0x10000
                out.append("\\u%04x\\u%04x" % (0xD800 | (code >> 10),
                                               0xDC00 | (code & 0x3FF)))
            else:
                out.append("\\u%04x" % code)
    return '"%s"' % "".join(out)


def _float(value):
    if value != value:
        return "NaN"
    if value in (float("inf"), float("-inf")):
        return "Infinity" if value > 0 else "-Infinity"
    return repr(value)


def _dump(value, level, out):
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, str):
        out.append(_string(value))
    elif isinstance(value, int):
        out.append(int.__repr__(value))
    elif isinstance(value, float):
        out.append(_float(value))
    elif isinstance(value, dict):
        if not value:
            out.append("{}")
            return
        inner = "\n" + " " * (level + 1)
        out.append("{")
        first = True
        for key in sorted(value):
            if not isinstance(key, str):
                raise TypeError("keys must be str, not %r" % (key,))
            out.append(inner if first else "," + inner)
            first = False
            out.append(_string(key))
            out.append(": ")
            _dump(value[key], level + 1, out)
        out.append("\n" + " " * level + "}")
    elif isinstance(value, (list, tuple)):
        if not value:
            out.append("[]")
            return
        inner = "\n" + " " * (level + 1)
        out.append("[")
        for index, item in enumerate(value):
            out.append(inner if index == 0 else "," + inner)
            _dump(item, level + 1, out)
        out.append("\n" + " " * level + "]")
    else:
        raise TypeError("not JSON serializable: %r" % (value,))


def dumps(value):
    """json.dumps(value, indent=1, sort_keys=True)."""
    out = []
    _dump(value, 0, out)
    return "".join(out)


# -- reading ------------------------------------------------------------------

def _skip(text, i):
    while i < len(text) and text[i] in _BLANK:
        i += 1
    return i


def _parse_string(text, i):
    """(str, index after the closing quote); i is just after the quote."""
    end = text.find('"', i)
    if end < 0:
        raise _NotLite()
    chunk = text[i:end]
    if "\\" not in chunk:
        if any(c < " " for c in chunk):
            raise _NotLite()  # a raw control character: json refuses it
        return chunk, end + 1
    out = []
    while True:
        if i >= len(text):
            raise _NotLite()
        c = text[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            escape = text[i + 1:i + 2]
            if escape == "u":
                digits = text[i + 2:i + 6]
                if len(digits) != 4 or not all(
                        d in "0123456789abcdefABCDEF" for d in digits):
                    raise _NotLite()
                code = int(digits, 16)
                i += 6
                if 0xD800 <= code < 0xDC00 and text[i:i + 2] == "\\u":
                    low = text[i + 2:i + 6]
                    if len(low) == 4 and all(
                            d in "0123456789abcdefABCDEF" for d in low) \
                            and 0xDC00 <= int(low, 16) < 0xE000:
                        code = 0x10000 + ((code - 0xD800) << 10) + \
                            (int(low, 16) - 0xDC00)
                        i += 6
                out.append(chr(code))
                continue
            if escape not in _UNESCAPE:
                raise _NotLite()
            out.append(_UNESCAPE[escape])
            i += 2
            continue
        if c < " ":
            raise _NotLite()
        out.append(c)
        i += 1


def _parse_number(text, i):
    start = i
    while i < len(text) and text[i] in _NUMBER_CHARS:
        i += 1
    token = text[start:i]
    body = token[1:] if token.startswith("-") else token
    mantissa, _, exponent = body.replace("E", "e").partition("e")
    whole, dot, fraction = mantissa.partition(".")
    if not whole or not all(c in _DIGITS for c in whole) or \
            (len(whole) > 1 and whole[0] == "0") or \
            (dot and (not fraction or not all(c in _DIGITS for c in fraction))):
        raise _NotLite()
    if "e" in body.replace("E", "e"):
        digits = exponent[1:] if exponent[:1] in ("+", "-") else exponent
        if not digits or not all(c in _DIGITS for c in digits):
            raise _NotLite()
        return float(token), i
    if dot:
        return float(token), i
    return int(token), i


def _parse(text, i, depth):
    if depth > 64:
        raise _NotLite()
    i = _skip(text, i)
    if i >= len(text):
        raise _NotLite()
    c = text[i]
    if c == "{":
        result = {}
        i = _skip(text, i + 1)
        if text[i:i + 1] == "}":
            return result, i + 1
        while True:
            if text[i:i + 1] != '"':
                raise _NotLite()
            key, i = _parse_string(text, i + 1)
            i = _skip(text, i)
            if text[i:i + 1] != ":":
                raise _NotLite()
            result[key], i = _parse(text, i + 1, depth + 1)
            i = _skip(text, i)
            if text[i:i + 1] == ",":
                i = _skip(text, i + 1)
                continue
            if text[i:i + 1] == "}":
                return result, i + 1
            raise _NotLite()
    if c == "[":
        items = []
        i = _skip(text, i + 1)
        if text[i:i + 1] == "]":
            return items, i + 1
        while True:
            item, i = _parse(text, i, depth + 1)
            items.append(item)
            i = _skip(text, i)
            if text[i:i + 1] == ",":
                i += 1
                continue
            if text[i:i + 1] == "]":
                return items, i + 1
            raise _NotLite()
    if c == '"':
        return _parse_string(text, i + 1)
    for word, value in (("true", True), ("false", False), ("null", None)):
        if text.startswith(word, i):
            return value, i + len(word)
    if c == "-" or c in _DIGITS:
        return _parse_number(text, i)
    raise _NotLite()  # NaN, Infinity and anything else: json decides


_C = []  # [(scanner or None, _json or None)], made on first use


class _ScanContext(object):
    """What json.scanner.c_make_scanner reads from a JSONDecoder, as
    json.loads's default decoder has it."""
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = {"-Infinity": float("-inf"), "Infinity": float("inf"),
                      "NaN": float("nan")}.__getitem__
    memo = None


def _not_serializable(value):
    raise TypeError("not JSON serializable: %r" % (value,))


def _c_parts():
    """(scanner, the _json module) from json's C accelerator; None for
    what this Python lacks."""
    if not _C:
        try:
            import _json  # noqa: PLC0415 (only what json itself uses)
        except ImportError:  # pragma: no cover - every CPython 3 has it
            _json = None
        scanner = getattr(_json, "make_scanner", None)
        encodes = all(hasattr(_json, name) for name in (
            "make_encoder", "encode_basestring_ascii"))
        _C.append((scanner(_ScanContext()) if scanner else None,
                   _json if encodes else None))
    return _C[0]


def dumps_compact(value):
    """json.dumps(value, sort_keys=True, separators=(",", ":"))."""
    module = _c_parts()[1]
    if module is None:  # pragma: no cover - see _c_parts
        import json  # noqa: PLC0415 (start-up: see the module doc)
        return json.dumps(value, sort_keys=True, separators=(",", ":"))
    # what json.dumps builds for these arguments (a new one each time: its
    # circular-reference markers are per call)
    encode = module.make_encoder(
        {}, _not_serializable, module.encode_basestring_ascii, None, ":",
        ",", True, False, True)
    return "".join(encode(value, 0))


def loads(text):
    """json.loads(text), mostly without importing json."""
    scan = _c_parts()[0] if isinstance(text, str) else None
    if scan is not None:
        if not text.startswith("\ufeff"):  # json refuses a BOM
            try:
                value, end = scan(text, _skip(text, 0))
            except (StopIteration, ValueError):
                pass  # json.loads below says what is wrong
            else:
                if _skip(text, end) == len(text):
                    return value
    elif len(text) <= LITE_LIMIT:
        try:
            value, end = _parse(text, 0, 0)
            if _skip(text, end) == len(text):
                return value
        except (_NotLite, IndexError):
            pass
    import json  # noqa: PLC0415 (start-up: see the module doc)
    return json.loads(text)
