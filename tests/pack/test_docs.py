"""netoffload(8), the bash completion and the %license: generated from the
CLI's parser at build time (pack/gendocs.py) and shipped in the RPM; the
spec asks nothing of rpm that the 4.11 of XenServer 8 / XCP-ng 8.3 ignores."""
import os
import re
import subprocess
import sys

import pytest

from netoffload.cli import build_parser
from tests.support import layout, tools
from tests.support.tools import check, require_tool, run

ROOT = layout.REPO
GENDOCS = os.path.join(ROOT, "pack", "gendocs.py")
SPEC = os.path.join(ROOT, "pack", "netoffload.spec")
MAN = "/usr/share/man/man8/netoffload.8"
COMPLETION = "/usr/share/bash-completion/completions/netoffload"


def _verbs(parser):
    for action in parser._actions:
        if hasattr(action, "choices") and isinstance(action.choices, dict):
            return action.choices
    return {}


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("gendocs")
    man, comp = str(out / "netoffload.8"), str(out / "netoffload.bash")
    check([sys.executable, GENDOCS, "--man", man, "--completion", comp,
           "--date", "2026-12-01"])
    with open(man) as handle:
        man_text = handle.read()
    return man_text, comp


def test_every_verb_option_and_example_is_in_the_man_page(generated):
    man_text, _ = generated
    assert man_text.startswith('.TH NETOFFLOAD 8 "2026-12-01"')
    parser = build_parser()
    for verb, sub in _verbs(parser).items():
        assert ".SS netoffload %s" % verb.replace("-", "\\-") in man_text
        assert sub.description, "verb %s has no description" % verb
        for action in sub._actions:
            for flag in action.option_strings:
                assert action.help, "%s %s has no help" % (verb, flag)
                if flag not in ("-h", "--help"):
                    assert "\\fB%s\\fR" % flag.replace("-", "\\-") in man_text
    assert ".SS netoffload policy set" in man_text
    assert "netoffload apply ALL \\-\\-pool \\-\\-yes" in man_text


def test_man_page_renders_without_warnings(generated, tmp_path):
    require_tool("groff")
    man_text, _ = generated
    path = tmp_path / "netoffload.8"
    path.write_text(man_text)
    done = run(["groff", "-man", "-Tutf8", "-ww", "-z", str(path)])
    assert done.returncode == 0 and done.stderr == "", done.stderr


def _complete(comp, words):
    """What bash offers after `netoffload WORDS...` (the last is the one
    being completed)."""
    script = 'source "$1"; shift; COMP_WORDS=(netoffload "$@"); ' \
        'COMP_CWORD=$#; _netoffload; printf "%s\\n" "${COMPREPLY[@]}"'
    done = subprocess.run(["bash", "-c", script, "bash", comp] + words,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, timeout=30)
    assert done.returncode == 0, done.stderr
    return done.stdout.split()


def test_completion_offers_verbs_sub_verbs_options_and_targets(generated):
    _, comp = generated
    check(["bash", "-n", comp])
    assert set(_complete(comp, [""])) >= set(_verbs(build_parser()))
    assert _complete(comp, ["st"]) == ["status"]
    assert _complete(comp, ["policy", ""])[:2] == ["get", "set"]
    assert "--tag" in _complete(comp, ["policy", "set", "--"])
    assert "--dry-run" in _complete(comp, ["apply", "ALL", "--d"])
    assert "ALL" in _complete(comp, ["apply", ""])
    assert _complete(comp, ["report", "--c"]) == ["--csv"]


def test_spec_is_native_for_old_dom0_rpm():
    with open(SPEC) as handle:
        spec = handle.read()
    tags = re.findall(r"^([A-Za-z]+)(?:\([a-z]+\))?:", spec, re.M)
    assert "Recommends" not in tags and "Suggests" not in tags
    assert "URL" not in tags  # no placeholder address
    assert re.search(r"^%license LICENSE$", spec, re.M)
    assert "gendocs.py" in spec


@pytest.mark.root
def test_rpm_ships_man_page_completion_and_license(tmp_path):
    for name in ("rpmbuild", "rpm"):
        require_tool(name)
    outdir = str(tmp_path / "dist")
    check([sys.executable, os.path.join(ROOT, "pack", "build.py"), "rpm",
           "--outdir", outdir, "--builddir", str(tmp_path / "build"),
           "--check", "none"] + tools.allow_incomplete())
    [rpm] = os.listdir(outdir)
    assert rpm.endswith(".unsigned.rpm")
    path = os.path.join(outdir, rpm)
    listed = check(["rpm", "-qpl", "--nosignature", path]).splitlines()
    assert MAN in listed and COMPLETION in listed
    licenses = check(["rpm", "-qpL", "--nosignature", path]).split()
    assert [os.path.basename(p) for p in licenses] == ["LICENSE"]


@pytest.mark.root
def test_unsigned_rpm_never_replaces_a_signed_one(tmp_path):
    """`make rpm` after `make pack`: the signed RPM in dist/ stays."""
    for name in ("rpmbuild", "rpm"):
        require_tool(name)
    outdir = tmp_path / "dist"
    outdir.mkdir()
    version = tools.pack_build().read_version(ROOT)
    signed = outdir / ("netoffload-%s.rpm" % version)
    signed.write_bytes(b"the signed RPM of a pack")
    check([sys.executable, os.path.join(ROOT, "pack", "build.py"), "rpm",
           "--outdir", str(outdir), "--builddir", str(tmp_path / "build"),
           "--check", "none"] + tools.allow_incomplete())
    assert signed.read_bytes() == b"the signed RPM of a pack"
    assert (outdir / ("netoffload-%s.unsigned.rpm" % version)).is_file()
