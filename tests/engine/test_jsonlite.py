"""jsonlite against json: the same text out, the same values in, and never
more lenient (what it does not take, json.loads decides)."""
import json
import random

import pytest

from netoffload.engine import jsonlite

STRINGS = ["", "plain", 'quote"s', "back\\slash", "new\nline", "tab\t",
           "\x00\x1f\x7f", "caf\u00e9", "\u2028", "\U0001F600 emoji",
           "\ud800 lone", "/slash", "tx-checksum-ip-generic", "vif5.0"]
VALUES = [None, True, False, 0, -1, 12345678901234567890, 0.5, -2.5e-07,
          1e300, 1.0, float("nan"), float("inf"), float("-inf")]


def _random_value(rng, depth=0):
    kind = rng.randrange(8 if depth < 4 else 5)
    if kind == 0:
        return rng.choice(STRINGS)
    if kind == 1:
        return rng.choice(VALUES)
    if kind == 2:
        return rng.randrange(-10 ** 6, 10 ** 6)
    if kind == 3:
        return rng.random() * 10 ** rng.randrange(-5, 5)
    if kind == 4:
        return "".join(chr(rng.randrange(1, 0x3000)) for _ in range(5))
    if kind in (5, 6):
        return dict((rng.choice(STRINGS) + str(i), _random_value(rng, depth + 1))
                    for i in range(rng.randrange(4)))
    return [_random_value(rng, depth + 1) for _ in range(rng.randrange(4))]


@pytest.mark.parametrize("seed", range(200))
def test_dumps_equals_json_and_loads_reads_it_back(seed):
    value = _random_value(random.Random(seed))
    text = json.dumps(value, indent=1, sort_keys=True)
    assert jsonlite.dumps(value) == text
    assert repr(jsonlite.loads(text)) == repr(json.loads(text))
    compact = json.dumps(value)
    assert repr(jsonlite.loads(compact)) == repr(json.loads(compact))
    assert jsonlite.dumps_compact(value) == json.dumps(
        value, sort_keys=True, separators=(",", ":"))


def test_a_live_state_record():
    record = {"version": 1, "devices": {"vif5.0": {
        "features": {"tx": "on", "sg": "off"}, "owner": "ab/0",
        "requested": {"tx-checksum-ip-generic": "on"},
        "held": {"by": "set", "since": 1764632000.123, "added": ["gro"],
                 "wanted": {}, "features": {}, "requested": {}}}}}
    text = json.dumps(record, indent=1, sort_keys=True)
    assert jsonlite.dumps(record) == text
    assert jsonlite.loads(text) == record  # a record written before 91a5334
    compact = jsonlite.dumps_compact(record)
    assert compact == json.dumps(record, sort_keys=True, separators=(",", ":"))
    assert jsonlite.loads(compact) == record


@pytest.mark.parametrize("parser", ["c", "python"])
@pytest.mark.parametrize("text", [
    "", " ", "{", "}", "[1,]", "{\"a\":1,}", "{\"a\" 1}", "01", "1.", ".5",
    "-", "1e", "1e+", "+1", "tru", "nul", "\"abc", "\"a\x01b\"", "\"\\x\"",
    "\"\\u12\"", "{} {}", "[1 2]", "{'a': 1}", "1-2", "--1", "[", "[[[]]",
    "\x00", "{\"a\":1}x", "\"\\ud800\"", "NaN", "Infinity", "-Infinity",
    "[" * 100 + "]" * 100, "{\"a\": [1, {\"b\": null}], \"c\": -0.0}",
    "  [1, 2.5e3, -3E-2, true, false, null]  ",
    # what the C scanner is handed: json's blanks only, no BOM, no tail
    "\ufeff{}", " \ufeff{}", "{}\ufeff", "\x0b{}", "\x0c{}", "\u00a0{}",
    "{}\u2028", "\t\n\r {}\t\n\r", "\"\t\"", "[-NaN]", "1E400",
], ids=lambda t: repr(t)[:20])
def test_loads_is_never_more_lenient_than_json(mocker, parser, text):
    if parser == "python":
        mocker.patch.object(jsonlite, "_C", [(None, None)])
    try:
        expected = ("ok", repr(json.loads(text)))
    except ValueError:
        expected = ("error", None)
    try:
        got = ("ok", repr(jsonlite.loads(text)))
    except ValueError:
        got = ("error", None)
    assert got == expected


def test_big_text_goes_to_json_without_the_c_scanner(mocker):
    text = json.dumps({"k%d" % i: "v" for i in range(5000)})
    assert len(text) > jsonlite.LITE_LIMIT
    mocker.patch.object(jsonlite, "_C", [(None, None)])
    parse = mocker.spy(jsonlite, "_parse")
    assert jsonlite.loads(text) == json.loads(text)
    assert not parse.called


@pytest.mark.parametrize("seed", range(50))
def test_the_python_parser_agrees_with_the_c_scanner(mocker, seed):
    """Where json's C scanner is missing, the Python parser takes over."""
    value = _random_value(random.Random(seed))
    texts = [json.dumps(value, indent=1, sort_keys=True), json.dumps(value)]
    expected = [repr(jsonlite.loads(t)) for t in texts]
    mocker.patch.object(jsonlite, "_C", [(None, None)])
    parse = mocker.spy(jsonlite, "_parse")
    assert [repr(jsonlite.loads(t)) for t in texts] == expected
    assert parse.call_count > 0


_NO_JSON_CODE = """
import sys
from netoffload.engine import jsonlite
value = jsonlite.loads(' {"a": [1, 2.5, null, "\\u00e9"]}\\n')
text = jsonlite.dumps_compact({"b": 1, "a": [True]})
print(repr(value), "json" in sys.modules, "json.decoder" in sys.modules, text)
"""


def test_loads_uses_the_c_scanner_and_no_json_import():
    import subprocess
    import sys
    out = subprocess.run([sys.executable, "-S", "-c", _NO_JSON_CODE],
                         stdout=subprocess.PIPE, universal_newlines=True,
                         check=True, timeout=30).stdout
    assert out == "{'a': [1, 2.5, None, '\u00e9']} False False " \
        '{"a":[true],"b":1}\n'


@pytest.mark.parametrize("value", [{1: "a", 2: "b"}, {1: "a", "b": 2},
                                   {"a": object()}, [set()], [{"x": 1e400}]])
def test_dumps_compact_does_what_json_does(value):
    def outcome(dump):
        try:
            return ("ok", dump(value))
        except (TypeError, ValueError) as err:
            return ("error", type(err))
    assert outcome(jsonlite.dumps_compact) == outcome(
        lambda v: json.dumps(v, sort_keys=True, separators=(",", ":")))
