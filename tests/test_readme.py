"""README doc test: every command README.md shows runs, or says why not.

Convention (README "Testing" says it too): command lines live only in
```sh fenced blocks, one per line (``\\`` continues a line; ``#`` starts a
comment; a trailing ``# exit N`` documents a non-zero exit status, and a
``NETOFFLOAD_...`` code named there must be in the error output). Fences of
any other kind (```text, ```python) hold no commands: a line there that
starts like a command fails the test.

Each extracted line is either
* runnable: ``netoffload ...`` or ``xe host-call-plugin ...``. These run in
  README order, as an admin would type them, against one pool in a box
  (sim/poolbox.py with the demo's pool), so state builds up (a policy is set
  before it is applied, revert comes last). Exit status, JSON and a few
  README claims (revert ALL restores everything) are asserted;
* or matched by exactly one ALLOWED entry, which gives the reason it cannot
  run here and a check that stands in for running it (the make target, unit,
  file or key name exists where the product says). A new command without an
  entry fails; an entry no line uses fails too.

Shell variables: every ``$VAR`` a command uses must be assigned by an earlier
README line; for runnable lines the box supplies a stand-in (STAND_INS).
Documentation addresses (192.0.2.0/24) stand for another host of the box.
"""
import ast
import collections
import json
import os
import re
import shlex
import subprocess
import sys
import time

import pytest

from tests.support import layout

ROOT = layout.REPO
README = os.path.join(ROOT, "README.md")

# A line that starts like a shell command (used to find commands hiding in
# non-sh blocks, and to tell commands from prose in sh blocks).
COMMAND_START = re.compile(
    r"^(?:\$ )?(?:netoffload|xe|xe-[a-z-]+|make|sudo|yum|rpm|systemctl|"
    r"journalctl|gpg|install|rm|ip|ethtool|tcpdump|python3?|"
    r"\.venv/\S+|[A-Z][A-Z0-9_]*=\S*)(?:\s|$)")
ASSIGNMENT = re.compile(r"^([A-Z][A-Z0-9_]*)=\$\((.+)\)$")
VARIABLE = re.compile(r"\$\{?([A-Z][A-Z0-9_]*)\}?")
EXPECTED_EXIT = re.compile(r"\bexit (\d+)\b")
ERROR_CODE = re.compile(r"\bNETOFFLOAD_[A-Z_]+\b")
DOC_ADDRESS = "192.0.2.10"      # TEST-NET-1: "the far end" in README
FAR_HOST = "host2"              # ... which in the box is host2
RUNNABLE_FLOOR = 35             # an extraction bug must not pass quietly

Command = collections.namedtuple("Command", "line text comment")


# -- extraction ----------------------------------------------------------------

def fenced_blocks(text):
    """[(info string, first line number, [lines])] of every fenced block;
    indentation of the opening fence (list items) is removed."""
    blocks, current = [], None
    for number, raw in enumerate(text.splitlines(), 1):
        stripped = raw.strip()
        if current is None:
            if stripped.startswith("```"):
                indent = len(raw) - len(raw.lstrip())
                current = (stripped[3:].strip(), number + 1, indent, [])
            continue
        if stripped == "```":
            blocks.append((current[0], current[1], current[3]))
            current = None
            continue
        indent = current[2]
        current[3].append(raw[indent:] if raw[:indent].strip() == "" else raw)
    assert current is None, "unclosed fence opened at line %d" % current[1]
    return blocks


def split_comment(line):
    """(command, comment) at the first unquoted '#' after a blank."""
    quote = None
    for i, char in enumerate(line):
        if quote:
            if char == quote:
                quote = None
        elif char in "'\"":
            quote = char
        elif char == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1:].strip()
    return line.rstrip(), ""


def commands_in(lines, first_line):
    """Command lines of one sh block, continuations joined."""
    out, pending, start = [], "", None
    for offset, raw in enumerate(lines):
        if not pending and (not raw.strip() or raw.lstrip().startswith("#")):
            continue
        if start is None:
            start = first_line + offset
        text, comment = split_comment(raw.strip() if pending else raw)
        if text.endswith("\\"):
            pending += text[:-1].rstrip() + " "
            continue
        out.append(Command(start, (pending + text).strip(), comment))
        pending, start = "", None
    assert not pending, "dangling continuation at line %s" % start
    return out


def readme_text():
    with open(README) as f:
        return f.read()


def readme_commands():
    found = []
    for info, first, lines in fenced_blocks(readme_text()):
        if info == "sh":
            found.extend(commands_in(lines, first))
    return found


def is_runnable(argv):
    return argv[:1] == ["netoffload"] or argv[:2] == ["xe", "host-call-plugin"]


def is_background(argv):
    return argv[:3] == ["netoffload", "bench", "server"]


# -- what cannot run here, why, and how it is checked instead ----------------

def _makefile_targets():
    with open(os.path.join(ROOT, "Makefile")) as f:
        return set(m.group(1) for m in re.finditer(
            r"^([A-Za-z][\w-]*):", f.read(), re.M))


def _build_module():
    """pack/build.py's constants, read without running it."""
    with open(os.path.join(ROOT, "pack", "build.py")) as f:
        tree = ast.parse(f.read())
    consts = {"__doc__": ast.get_docstring(tree)}
    for node in tree.body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and \
                isinstance(node.targets[0], ast.Name):
            try:
                consts[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return consts


def _spec_name():
    with open(os.path.join(ROOT, "pack", "netoffload.spec")) as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip() == "Name":
                return value.strip()
    return None


def _unit_lines(unit):
    path = os.path.join(ROOT, "init", unit + ".service")
    assert os.path.isfile(path), "no unit %s in init/" % unit
    with open(path) as f:
        return [line.strip() for line in f]


def check_make(argv):
    assert argv[1] in _makefile_targets(), "no Makefile target %s" % argv[1]


def check_dist_name(argv):
    """X.Y.Z file names are the ones pack/build.py documents it writes."""
    doc = _build_module()["__doc__"]
    for word in argv:
        for name in re.findall(r"netoffload-X\.Y\.Z[\w.]*", word):
            assert "dist/" + name in doc.split(), (name, doc)


def check_key_file(argv):
    key = _build_module()["KEY_FILE"]
    paths = [w for w in argv if w.startswith("/etc/pki/rpm-gpg/")]
    assert paths and all(p == "/etc/pki/rpm-gpg/" + key for p in paths)


def check_key_and_dist(argv):
    check_key_file(argv)
    check_dist_name(argv)


def check_units(argv):
    units = argv[2:]
    assert units
    for unit in units:
        _unit_lines(unit)


def check_syslog_tag(argv):
    tag = argv[argv.index("-t") + 1]
    for unit in ("netoffload-boot", "netoffload-watch"):
        assert "SyslogIdentifier=%s" % tag in _unit_lines(unit)
    import inspect

    from netoffload import log
    assert inspect.signature(log.get_logger).parameters["name"].default == tag


def check_package_name(argv):
    assert argv[-1] == _spec_name()


def check_yum_install(argv):
    check_dist_name(argv)
    assert os.path.basename(argv[-1]).startswith(_spec_name() + "-")


def check_state_dir(argv):
    from netoffload import paths
    assert argv[-1] == paths.STATE_DIR


def check_this_test(argv):
    assert os.path.samefile(os.path.join(ROOT, argv[-2]), __file__)


def check_nothing(argv):
    """The box stands in a value for what this prints (STAND_INS)."""


Allowed = collections.namedtuple("Allowed", "pattern reason check")

ALLOWED = [
    Allowed(r"make (demo|test|box)",
            "make demo builds its own pool in a box (tests/sim/test_poolbox_demo.py "
            "runs the same story), make box is interactive (tests/sim/test_box.py "
            "drives it through a pty) and make test runs the whole suite, this "
            "test included", check_make),
    Allowed(r"install -m 0644 netoffload-X\.Y\.Z\.pubkey\.asc "
            r"/etc/pki/rpm-gpg/\S+",
            "writes into dom0's /etc/pki/rpm-gpg with a release's key",
            check_key_and_dist),
    Allowed(r"gpg --homedir /opt/xensource/gpg --import /etc/pki/rpm-gpg/\S+",
            "xapi's keyring exists only in dom0", check_key_file),
    Allowed(r"xe-install-supplemental-pack netoffload-X\.Y\.Z\.iso",
            "needs a real xapi and dom0's yum (the ISO itself is checked by "
            "tests/pack/test_iso.py)", check_dist_name),
    Allowed(r"xe update-upload file-name=netoffload-X\.Y\.Z\.iso",
            "xe update-* needs a real xapi (the simulator has no update "
            "class)", check_dist_name),
    Allowed(r"xe update-pool-apply uuid=\$UUID",
            "xe update-* needs a real xapi", check_nothing),
    Allowed(r"rpm --import /etc/pki/rpm-gpg/\S+",
            "changes this machine's rpm keyring", check_key_file),
    Allowed(r"yum install \./netoffload-X\.Y\.Z\.rpm",
            "needs dom0's yum (install/upgrade/erase are tested in a "
            "temporary root by tests/pack/test_rpm.py)", check_yum_install),
    Allowed(r"yum remove netoffload",
            "needs dom0's yum (erase is tested by tests/pack/test_rpm.py)",
            check_package_name),
    Allowed(r"systemctl (status|start)( netoffload-[a-z]+)+",
            "needs dom0's systemd (units verified by tests/pack/test_units.py)",
            check_units),
    Allowed(r"journalctl -t netoffload",
            "reads dom0's journal", check_syslog_tag),
    Allowed(r"xe pool-list params=master --minimal",
            "xe pool-list needs a real xapi; the box's master uuid stands in "
            "for $MASTER", check_nothing),
    Allowed(r"rm -rf /var/lib/netoffload",
            "deletes dom0's state directory", check_state_dir),
    Allowed(r"\.venv/bin/python -m pytest tests/test_readme\.py -q",
            "this very test: running it would recurse", check_this_test),
]


def allowed_for(text):
    hits = [a for a in ALLOWED if re.fullmatch(a.pattern, text)]
    assert len(hits) <= 1, "several ALLOWED entries match %r" % text
    return hits[0] if hits else None


def unrunnable():
    """(command, the text to match) for each line that cannot run here."""
    out = []
    for cmd in readme_commands():
        text = cmd.text
        match = ASSIGNMENT.match(text)
        if match:
            text = match.group(2)
        if not is_runnable(shlex.split(text)):
            out.append((cmd, text))
    return out


def runnable():
    return [cmd for cmd in readme_commands()
            if is_runnable(shlex.split(cmd.text))]


# -- static tests (no root) --------------------------------------------------------

def test_extraction_finds_the_commands():
    cmds = readme_commands()
    run = runnable()
    assert len(run) >= RUNNABLE_FLOOR, "only %d runnable commands" % len(run)
    assert len(run) + len(unrunnable()) == len(cmds)
    kinds = set(tuple(shlex.split(c.text)[:2]) for c in run)
    assert ("xe", "host-call-plugin") in kinds
    assert any(k[0] == "netoffload" for k in kinds)
    # every sh line is a command: prose in an sh block would be "run"
    for cmd in cmds:
        assert COMMAND_START.match(cmd.text), (
            "README line %d: %r is in an sh block but does not start like a "
            "command: move prose out, or add its first word to "
            "COMMAND_START" % (cmd.line, cmd.text))


@pytest.mark.parametrize("block, want", [
    ("a \\\n  b c   # exit 2\n# note\n\nd\n",
     [Command(1, "a b c", "exit 2"), Command(5, "d", "")]),
    ("x 'it # is' quoted # real\n",
     [Command(1, "x 'it # is' quoted", "real")]),
], ids=["continuation-and-comment", "quoted-hash"])
def test_commands_in_parses_continuations_and_comments(block, want):
    assert commands_in(block.splitlines(), 1) == want


def test_fenced_blocks_strips_list_indentation():
    text = "1. step\n\n   ```sh\n   netoffload show\n   ```\n```text\nx\n```\n"
    assert fenced_blocks(text) == [("sh", 4, ["netoffload show"]),
                                   ("text", 7, ["x"])]


def test_no_commands_outside_sh_blocks():
    for info, first, lines in fenced_blocks(readme_text()):
        assert info, "fence without an info string at line %d" % first
        if info == "sh":
            continue
        for offset, line in enumerate(lines):
            assert not COMMAND_START.match(line.strip()), (
                "line %d looks like a command in a ```%s block: put it in a "
                "```sh block" % (first + offset, info))


@pytest.mark.parametrize("cmd, text", unrunnable(),
                         ids=lambda v: "L%d" % v.line
                         if isinstance(v, Command) else v.split()[0])
def test_unrunnable_command_is_allow_listed_and_checked(cmd, text):
    entry = allowed_for(text)
    assert entry is not None, (
        "README line %d: %r cannot run in the box and has no ALLOWED entry "
        "with a reason" % (cmd.line, text))
    assert entry.reason
    entry.check(shlex.split(text))


def test_every_allow_list_entry_is_used():
    used = set(allowed_for(text).pattern for _, text in unrunnable()
               if allowed_for(text))
    assert used == set(a.pattern for a in ALLOWED)


def test_variables_are_assigned_before_use():
    assigned = set()
    for cmd in readme_commands():
        for name in VARIABLE.findall(cmd.text):
            assert name in assigned, "README line %d uses $%s before it is " \
                "assigned" % (cmd.line, name)
        match = ASSIGNMENT.match(cmd.text)
        if match:
            assigned.add(match.group(1))


def test_inline_make_and_netoffload_mentions_exist():
    from netoffload import cli
    verbs = set(cli.build_parser()._subparsers._group_actions[0].choices)
    targets = _makefile_targets()
    spans = re.findall(r"`([^`\n]+)`", readme_text())
    seen = 0
    for span in spans:
        words = span.split()
        if words[:1] == ["make"] and len(words) == 2:
            assert words[1] in targets, span
            seen += 1
        if words[:1] == ["netoffload"] and len(words) > 1 and \
                re.match(r"^[a-z-]+$", words[1]):
            assert words[1] in verbs, span
            seen += 1
    assert seen >= 4


def _slug(heading):
    slug = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return slug.replace(" ", "-")


def test_relative_links_resolve():
    links = re.findall(r"\]\(([^)\s]+)\)", readme_text())
    checked = 0
    for link in links:
        if re.match(r"^[a-z]+:", link):
            continue
        path, _, anchor = link.partition("#")
        target = os.path.join(ROOT, path) if path else README
        assert os.path.exists(target), link
        if anchor:
            with open(target) as f:
                slugs = [_slug(m) for m in re.findall(
                    r"^#+ (.+)$", f.read(), re.M)]
            assert anchor in slugs, link
        checked += 1
    assert checked >= 5


# -- running the commands against a pool in a box ------------------------------

@pytest.fixture(scope="module")
def box():
    from sim import demo, poolbox
    with poolbox.PoolBox(hosts=3, vm_specs=demo.VM_SPECS,
                         pif_other_config=demo.PIF_OTHER_CONFIG) as pool:
        pool.readme_baseline = (pool.db_other_config(), pool.live_features())
        yield pool


def stand_ins(box):
    """Values for README's shell variables and documentation addresses."""
    return {"$MASTER": box.master.uuid,
            DOC_ADDRESS: box.host(FAR_HOST).address}


def _substitute(text, box):
    for placeholder, value in stand_ins(box).items():
        text = text.replace(placeholder, value)
    left = VARIABLE.findall(text)
    assert not left, "no stand-in for $%s: add one to stand_ins()" % left
    return text


def _start_in_background(box, argv):
    from netoffload.diagnostics import perftest
    host = box.host(FAR_HOST)
    proc = host.ns.popen([sys.executable, "-m"] + argv, env=host.env(),
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL, start_new_session=True)
    box.processes.append(proc)        # box.close() stops it
    deadline = time.time() + 15
    while time.time() < deadline:
        assert proc.poll() is None, "%s exited with %s" % (argv, proc.returncode)
        probe = host.ns.run([sys.executable, "-c", (
            "import socket; socket.create_connection(('127.0.0.1', %d), 1)"
            % perftest.DEFAULT_PORT)], check=False)
        if probe.returncode == 0:
            return
        time.sleep(0.2)
    raise AssertionError("%s did not start listening" % argv)


def _traffic_if_capturing(box, text):
    """check-checksums needs packets: web01's guest talks to host1."""
    if "check-checksums" in text or "fn=check_checksums" in text:
        return box.traffic(box.master, "web01", seconds=10)
    return _NoTraffic()


class _NoTraffic(object):
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _assert_sane(cmd, argv, rc, out, err, box):
    wanted_rc = int(EXPECTED_EXIT.search(cmd.comment).group(1)) \
        if EXPECTED_EXIT.search(cmd.comment) else 0
    where = "README line %d: %s" % (cmd.line, cmd.text)
    assert rc == wanted_rc, "%s\nexit %d, wanted %d\n%s%s" % (
        where, rc, wanted_rc, out[-2000:], err[-2000:])
    assert "Traceback" not in err, where + "\n" + err
    for code in ERROR_CODE.findall(cmd.comment):
        assert code in err.split() or ("netoffload: %s:" % code) in err, \
            (where, err)
    if rc != 0:
        return None
    if argv[0] == "xe" or "--json" in argv:
        result = json.loads(out)
        assert isinstance(result, dict) and result, where
        return result
    assert out.strip(), where + ": printed nothing"
    return None


def _status_all_compliant(result):
    hosts = result.get("hosts") or [{"ok": True, "result": result}]
    assert len(hosts) == 3
    for host in hosts:
        assert host["ok"], host
        for dev in host["result"]["devices"]:
            assert dev["compliant"], dev


# Extra claims README makes about particular lines.
README_CLAIMS = {
    "netoffload --version":
        lambda box, result, out: _version_matches(out),
    "netoffload status --pool --json":
        lambda box, result, out: _status_all_compliant(result),
    "xe host-call-plugin host-uuid=$MASTER plugin=netoffload fn=check_checksums"
    " args:device=vif1.0 args:seconds=5":
        lambda box, result, out: _no_corruption_with_traffic(result),
    "xe host-call-plugin host-uuid=$MASTER plugin=netoffload fn=revert"
    " args:target=ALL args:confirm=yes args:pool=true":
        lambda box, result, out: _back_where_it_started(box),
}


def _version_matches(out):
    import netoffload
    assert out.split() == ["netoffload", netoffload.__version__]


def _no_corruption_with_traffic(result):
    assert result["status"] == "no_corruption", result["verdict"]
    assert result["classes"]["egress_local"] + \
        result["classes"]["guest_to_dom0"] > 0, result["classes"]


def _back_where_it_started(box):
    db, live = box.readme_baseline
    assert box.db_other_config() == db
    assert box.live_features() == live


def test_readme_claims_name_real_lines():
    texts = set(c.text for c in readme_commands())
    assert set(README_CLAIMS) <= texts, set(README_CLAIMS) - texts


@pytest.mark.root
@pytest.mark.parametrize("cmd", runnable(),
                         ids=lambda c: "L%d-%s" % (c.line, "-".join(
                             shlex.split(c.text)[:4])[:60]))
def test_readme_command_runs_in_the_box(box, cmd):
    text = _substitute(cmd.text, box)
    argv = shlex.split(text)
    if is_background(argv):
        _start_in_background(box, argv)
        return
    if argv[0] == "xe":
        params = dict(w.split("=", 1) for w in argv[2:] if "=" in w)
        assert params.get("host-uuid") in [h.uuid for h in box.hosts], text
    with _traffic_if_capturing(box, text):
        # stdin is a pipe, never a terminal: `apply ALL` cannot prompt
        rc, out, err = box.admin(text, input_text="")
    result = _assert_sane(cmd, argv, rc, out, err, box)
    claim = README_CLAIMS.get(cmd.text)
    if claim is not None:
        claim(box, result, out)
