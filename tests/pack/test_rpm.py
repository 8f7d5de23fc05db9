"""The RPM, built by pack/build.py with the real rpmbuild, inspected with the
real rpm, installed, upgraded and erased in a throw-away root whose
scriptlets run (chrooted, by rpm) against stand-ins that record their calls.
"""
import glob
import os
import shutil
import socket
import stat
import sys
import tarfile
import xml.etree.ElementTree as ET

import pytest

from netoffload.engine.livestate import STATE_FILE
from netoffload.paths import STATE_DIR
from tests.support import layout, tools
from tests.support.tools import check, interpreter, require_tool, run

ROOT = layout.REPO
BUILD_PY = os.path.join(ROOT, "pack", "build.py")
PYPRIVATE = "/usr/lib/netoffload/python"
CALLS_LOG = "/var/log/standin-calls"
# The live-state record the engine writes (what erase and upgrade must keep).
LIVE_STATE = STATE_DIR + "/" + STATE_FILE

# Source files other engineers provide; a release build needs every one.
REQUIRED_SOURCES = (
    "plugins/netoffload",
    "init/netoffload-boot.service",
    "init/netoffload-watch.service",
    "netoffload/agents/udev.py",
    "netoffload/agents/watch.py",
    "netoffload/agents/boot.py",
)

PACK_TOOLS = ("rpmbuild", "rpm", "rpm2archive")


@pytest.fixture(scope="module", autouse=True)
def pack_tools():
    """Skips locally, fails under CI=true, without the tools (before `built`)."""
    for name in PACK_TOOLS:
        require_tool(name)




def _tree_version():
    return tools.pack_build().read_version(ROOT)


def _bumped(version):
    parts = version.split(".")
    parts[-1] = str(int(parts[-1]) + 1)
    return ".".join(parts)


class Built(object):
    pass


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """Two RPMs: the tree's version and a bumped one for the upgrade."""
    base = tmp_path_factory.mktemp("pack-rpm")
    result = Built()
    result.version = _tree_version()
    result.bumped = _bumped(result.version)
    result.outdir = str(base / "dist")
    incomplete = tools.allow_incomplete()
    # The first build is `make rpm`'s (its %check runs pytest with this
    # python), on the engine's and pool's no-root tests: `make test` runs
    # every test itself, and the whole no-root suite again inside rpmbuild
    # would double its time. The bumped one only needs the quick selftest.
    result.builddir = str(base / "build")
    result.log = run([sys.executable, BUILD_PY, "rpm", "--outdir", result.outdir,
                      "--builddir", result.builddir,
                      "--check-tests", "tests/engine", "tests/pool"] + incomplete)
    assert result.log.returncode == 0, result.log.stderr
    check([sys.executable, BUILD_PY, "rpm", "--outdir", result.outdir,
           "--builddir", str(base / "build-bumped"), "--check", "selftest",
           "--version", result.bumped] + incomplete)
    result.v1 = os.path.join(result.outdir, "netoffload-%s.unsigned.rpm" % result.version)
    result.v2 = os.path.join(result.outdir, "netoffload-%s.unsigned.rpm" % result.bumped)
    return result


def query(rpm_path, queryformat):
    return check(["rpm", "-qp", "--nosignature", "--queryformat", queryformat, rpm_path])


def dump(rpm_path):
    """rpm --dump: path size mtime digest mode owner group config doc rdev link."""
    entries = {}
    for line in check(["rpm", "-qp", "--nosignature", "--dump", rpm_path]).splitlines():
        fields = line.split()
        entries[fields[0]] = {"mode": int(fields[4], 8), "owner": fields[5],
                              "group": fields[6]}
    return entries


def expected_entries():
    table = [
        ("/etc/xapi.d/plugins/netoffload", stat.S_IFREG | 0o755),
        ("/usr/bin/netoffload", stat.S_IFREG | 0o755),
        ("/usr/libexec/netoffload", stat.S_IFDIR | 0o755),
        ("/usr/libexec/netoffload/netoffload-udev", stat.S_IFREG | 0o755),
        ("/usr/libexec/netoffload/netoffload-watch", stat.S_IFREG | 0o755),
        ("/usr/libexec/netoffload/netoffload-boot", stat.S_IFREG | 0o755),
        ("/usr/lib/systemd/system/netoffload-boot.service", stat.S_IFREG | 0o644),
        ("/usr/lib/systemd/system/netoffload-watch.service", stat.S_IFREG | 0o644),
        ("/usr/lib/netoffload/python", stat.S_IFDIR | 0o755),
        (PYPRIVATE + "/netoffload/__init__.py", stat.S_IFREG | 0o644),
        ("/var/lib/netoffload", stat.S_IFDIR | 0o700),
    ]
    for rules in sorted(glob.glob(os.path.join(ROOT, "udev", "*.rules"))):
        table.append(("/usr/lib/udev/rules.d/" + os.path.basename(rules),
                      stat.S_IFREG | 0o644))
    return table


EXPECTED = expected_entries()


# ------------------------------------------------------------ the package

def test_source_tree_has_every_shipped_piece():
    # a release RPM needs these; make rpm fails without them
    assert [p for p in REQUIRED_SOURCES
            if not os.path.isfile(os.path.join(ROOT, p))] == []
    assert tools.pack_build().missing_sources(ROOT) == []


def test_rpm_has_the_dist_name_and_header(built):
    assert os.path.isfile(built.v1)
    assert query(built.v1, "%{NAME} %{VERSION} %{RELEASE} %{ARCH}").split() == [
        "netoffload", built.version, "1", "noarch"]
    # unsigned: never under the names a signed build (make pack) uses
    for signed_name in ("netoffload-%s-1.noarch.rpm", "netoffload-%s.rpm"):
        assert not os.path.exists(os.path.join(built.outdir, signed_name % built.version))


@pytest.mark.parametrize("path,mode", EXPECTED, ids=[p for p, _ in EXPECTED])
def test_dump_has_path_with_mode(built, path, mode):
    entries = dump(built.v1)
    assert path in entries
    assert (entries[path]["mode"], entries[path]["owner"], entries[path]["group"]) == (
        mode, "root", "root")


def test_file_list_is_exactly_the_layout(built):
    listed = set(check(["rpm", "-qpl", "--nosignature", built.v1]).splitlines())
    modules = set()
    for path in glob.glob(os.path.join(ROOT, "netoffload", "**", "*.py"), recursive=True):
        modules.add(PYPRIVATE + "/" + os.path.relpath(path, ROOT))
    assert modules <= listed
    packaged_python = {p for p in listed if p.startswith(PYPRIVATE + "/") and p.endswith(".py")}
    assert packaged_python == modules
    assert not [p for p in listed if p.endswith(".pyc") or "__pycache__" in p]
    allowed_tops = ("/etc/xapi.d/plugins/", "/usr/bin/netoffload", "/usr/libexec/netoffload",
                    "/usr/lib/netoffload", "/usr/lib/udev/rules.d/",
                    "/usr/lib/systemd/system/", "/var/lib/netoffload",
                    "/usr/share/man/man8/netoffload.8",
                    "/usr/share/bash-completion/completions/netoffload",
                    # %license: .../netoffload or .../netoffload-X.Y.Z by rpm version
                    "/usr/share/licenses/netoffload")
    assert [p for p in listed if not p.startswith(allowed_tops)] == []


def test_default_check_ran_the_no_root_tests(built):
    """`make rpm` (build.py's default check) ran pytest in %check: every test
    passed, none marked root (here on tests/engine and tests/pool; make rpm
    gives it every folder but the pack tests)."""
    report = os.path.join(built.builddir, "rpmbuild", "check-pytest.xml")
    root = ET.parse(report).getroot()
    suite = root if root.tag == "testsuite" else root.find("testsuite")
    cases = suite.findall("testcase")
    # classname: tests.<folder>.<module>[.<class>]
    modules = {".".join(case.get("classname").split(".")[:3]) for case in cases}
    assert (int(suite.get("failures")), int(suite.get("errors"))) == (0, 0)
    assert int(suite.get("tests")) == len(cases) > 100
    assert "tests.engine.test_policy" in modules  # no root needed: ran
    assert "tests.engine.test_ethtool_kernel" not in modules  # all marked root
    assert not [m for m in modules if m.startswith("tests.pack.")]
    summary = build_log_line(built.log.stderr, "%check ran pytest: ")
    assert summary.startswith("%d tests, 0 failed, 0 errors, " % len(cases))


def build_log_line(stderr, prefix):
    """The one `build: <prefix>...` line pack/build.py logged, without the prefix."""
    lines = [line[len("build: " + prefix):] for line in stderr.splitlines()
             if line.startswith("build: " + prefix)]
    assert len(lines) == 1, stderr
    return lines[0]


REQUIRED_DEPENDENCIES = ["python3 >= 3.6", "xapi-core", "ethtool", "/usr/bin/systemctl",
                         "/usr/bin/udevadm", "coreutils"]


@pytest.mark.parametrize("dependency", REQUIRED_DEPENDENCIES)
def test_requires(built, dependency):
    requires = check(["rpm", "-qp", "--nosignature", "--requires", built.v1]).splitlines()
    assert dependency in requires


def test_requires_only_rpm_features_old_dom0_rpm_has(built):
    # rpm 4.11 (XenServer 8 / XCP-ng 8.3) lacks zstd payloads and newer rpmlib features.
    requires = check(["rpm", "-qp", "--nosignature", "--requires", built.v1]).splitlines()
    rpmlib = {r.split()[0] for r in requires if r.startswith("rpmlib(")}
    assert rpmlib <= {"rpmlib(CompressedFileNames)", "rpmlib(FileDigests)",
                      "rpmlib(PayloadFilesHavePrefix)", "rpmlib(PayloadIsXz)"}
    assert query(built.v1, "%{PAYLOADCOMPRESSOR}") == "gzip"


SCRIPTLET_TAGS = ["POSTIN", "PREUN", "POSTUN"]


@pytest.mark.parametrize("tag", SCRIPTLET_TAGS)
def test_scriptlet_is_valid_sh(built, tag, tmp_path):
    assert query(built.v1, "%%{%sPROG}" % tag) == "/bin/sh"
    body = query(built.v1, "%%{%s}" % tag)
    script = tmp_path / "script.sh"
    script.write_text(body)
    check(["sh", "-n", str(script)])


def test_scripts_listing_names_each_scriptlet(built):
    listing = check(["rpm", "-qp", "--nosignature", "--scripts", built.v1]).splitlines()
    headers = [line for line in listing if line.endswith("scriptlet (using /bin/sh):")]
    assert [h.split()[0] for h in headers] == ["postinstall", "preuninstall", "postuninstall"]


def test_second_rpm_carries_the_bumped_version_inside(built, tmp_path):
    assert query(built.v2, "%{VERSION}") == built.bumped
    # rpm2archive writes <rpm>.tgz beside its input: work on a copy.
    copy = str(tmp_path / "v2.rpm")
    shutil.copyfile(built.v2, copy)
    check(["rpm2archive", copy])
    with tarfile.open(copy + ".tgz") as archive:
        member = archive.extractfile("." + PYPRIVATE + "/netoffload/__init__.py")
        init = member.read().decode("utf-8")
    assert '__version__ = "%s"' % built.bumped in init.splitlines()


# dom0: XenServer 8 / XCP-ng 8.3 have 3.6, XCP-ng 9 has 3.12.
DOM0_PYTHONS = ["3.6", "3.12"]


@pytest.mark.parametrize("minor", DOM0_PYTHONS)
def test_packaged_tree_passes_selftest_under_dom0_python(built, tmp_path, minor):
    python = interpreter(minor)
    if python is None:
        pytest.skip("no python%s on this machine" % minor)
    copy = str(tmp_path / "v1.rpm")
    shutil.copyfile(built.v1, copy)
    check(["rpm2archive", copy])
    tree = tmp_path / "tree"
    with tarfile.open(copy + ".tgz") as archive:
        archive.extractall(str(tree))
    incomplete = tools.allow_incomplete()
    check([python, os.path.join(ROOT, "pack", "selftest.py"), "--buildroot", str(tree),
           "--version", built.version] + incomplete)


# ------------------------------------------------------------ a root to install into

def _copy_binary(root, binary):
    """Copies an executable and the shared libraries ldd names into root."""
    real = os.path.realpath(binary)
    paths = [(real, binary)]
    for line in check(["ldd", real]).splitlines():
        fields = line.split()
        if "=>" in fields and len(fields) > fields.index("=>") + 1:
            lib = fields[fields.index("=>") + 1]
        elif fields and fields[0].startswith("/"):
            lib = fields[0]
        else:
            continue
        paths.append((os.path.realpath(lib), lib))
    for source, dest in paths:
        target = os.path.join(root, dest.lstrip("/"))
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copy2(source, target)


STANDIN = """#!/bin/sh
echo "{name} $*" >> {log}
exit {rc}
"""


class RpmRoot(object):
    """A directory rpm installs into with --root; scriptlets run chrooted in it
    with /bin/sh, rm and timeout, and recording stand-ins for systemctl,
    udevadm and python3 (the interpreter of the compile step and of
    netoffload-boot)."""

    def __init__(self, path, standin_rc=0):
        self.path = str(path)
        for sub in ("bin", "usr/bin", "dev", "tmp", "var/tmp", "var/log", "var/lib/rpm", "etc"):
            os.makedirs(os.path.join(self.path, sub), exist_ok=True)
        _copy_binary(self.path, "/bin/sh")
        _copy_binary(self.path, "/bin/rm")
        _copy_binary(self.path, "/usr/bin/timeout")
        os.mknod(os.path.join(self.path, "dev/null"), stat.S_IFCHR | 0o666, os.makedev(1, 3))
        for name in ("systemctl", "udevadm", "python3"):
            self.set_standin(name, standin_rc)
        check(["rpm", "--root", self.path, "--dbpath", "/var/lib/rpm", "--initdb"])

    def set_standin(self, name, rc):
        target = os.path.join(self.path, "usr/bin", name)
        with open(target, "w") as handle:
            handle.write(STANDIN.format(name=name, log=CALLS_LOG, rc=rc))
        os.chmod(target, 0o755)

    def rpm(self, *args):
        """rpm -i/-U/-e in this root (dom0's dependencies are not here)."""
        return run(["rpm", "--root", self.path, "--dbpath", "/var/lib/rpm", "--nodeps",
                    "--nosignature"] + list(args))

    def query(self, *args):
        return run(["rpm", "--root", self.path, "--dbpath", "/var/lib/rpm", "-q"] + list(args))

    def calls(self):
        """The stand-ins' calls since the last call of this method."""
        log = os.path.join(self.path, CALLS_LOG.lstrip("/"))
        if not os.path.exists(log):
            return []
        with open(log) as handle:
            lines = handle.read().splitlines()
        os.unlink(log)
        return lines

    def file(self, path):
        return os.path.join(self.path, path.lstrip("/"))

    def xapi_up(self):
        """Leaves a unix socket where xapi's would be, as a running xapi does."""
        path = self.file("/var/lib/xcp/xapi")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        sock.close()


INSTALL_CALLS = [
    "systemctl daemon-reload",
    "systemctl enable netoffload-boot.service netoffload-watch.service",
    "systemctl start netoffload-watch.service",
    "udevadm control --reload",
    "python3 -m compileall -q %s" % PYPRIVATE,
]
PRIME_CALL = "python3 /usr/libexec/netoffload/netoffload-boot --refresh-only"
UPGRADE_CALLS = [
    # the new package's %post ($1 = 2) ...
    "systemctl daemon-reload",
    "udevadm control --reload",
    "python3 -m compileall -q %s" % PYPRIVATE,
    # ... then the old package's %postun ($1 = 1)
    "systemctl daemon-reload",
    "udevadm control --reload",
    "systemctl try-restart netoffload-watch.service",
]
ERASE_CALLS = [
    "systemctl stop netoffload-watch.service",
    "systemctl --no-reload disable netoffload-watch.service netoffload-boot.service",
    "systemctl daemon-reload",
    "udevadm control --reload",
]


@pytest.mark.root
def test_install_lays_out_the_tree(built, tmp_path):
    root = RpmRoot(tmp_path / "root")
    proc = root.rpm("--noscripts", "-i", built.v1)
    assert proc.returncode == 0, proc.stderr
    for path, mode in EXPECTED:
        st = os.lstat(root.file(path))
        assert (path, st.st_mode, st.st_uid, st.st_gid) == (path, mode, 0, 0)
    assert root.calls() == []


@pytest.mark.root
def test_installed_cli_runs_from_the_private_path(built, tmp_path):
    root = RpmRoot(tmp_path / "root")
    assert root.rpm("--noscripts", "-i", built.v1).returncode == 0
    # The wrapper adds /usr/lib/netoffload/python; here that lives under the root.
    code = ("import runpy, sys\n"
            "private, wrapper = sys.argv[1:3]\n"
            "sys.path.insert(0, private)\n"
            "sys.argv = ['netoffload', '--version']\n"
            "try:\n"
            "    runpy.run_path(wrapper, run_name='__main__')\n"
            "finally:\n"
            "    print(sys.modules['netoffload'].__file__)\n")
    proc = run([sys.executable, "-I", "-c", code, root.file(PYPRIVATE),
                root.file("/usr/bin/netoffload")])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "netoffload %s" % built.version, root.file(PYPRIVATE + "/netoffload/__init__.py")]


@pytest.mark.root
@pytest.mark.parametrize("xapi_running", [False, True], ids=["xapi-down", "xapi-up"])
def test_install_scriptlet_enables_units_and_primes_only_with_xapi(built, tmp_path, xapi_running):
    root = RpmRoot(tmp_path / "root")
    if xapi_running:
        root.xapi_up()
    proc = root.rpm("-i", built.v1)
    assert proc.returncode == 0, proc.stderr
    assert root.calls() == INSTALL_CALLS + ([PRIME_CALL] if xapi_running else [])


@pytest.mark.root
def test_install_succeeds_when_systemd_and_python_fail(built, tmp_path):
    root = RpmRoot(tmp_path / "root", standin_rc=1)
    root.xapi_up()
    proc = root.rpm("-i", built.v1)
    assert proc.returncode == 0, proc.stderr
    assert root.calls() == INSTALL_CALLS + [PRIME_CALL]
    assert os.path.isfile(root.file("/usr/bin/netoffload"))
    assert root.query("netoffload").returncode == 0


@pytest.mark.root
def test_upgrade_restarts_watcher_and_keeps_state(built, tmp_path):
    root = RpmRoot(tmp_path / "root")
    assert root.rpm("-i", built.v1).returncode == 0
    root.calls()
    record = root.file(LIVE_STATE)
    with open(record, "w") as handle:
        handle.write('{"vif1.0": {"tx": "on"}}\n')
    proc = root.rpm("-U", built.v2)
    assert proc.returncode == 0, proc.stderr
    assert root.calls() == UPGRADE_CALLS
    with open(record) as handle:
        assert handle.read() == '{"vif1.0": {"tx": "on"}}\n'
    assert stat.S_IMODE(os.stat(root.file("/var/lib/netoffload")).st_mode) == 0o700
    assert root.query("--qf", "%{VERSION}", "netoffload").stdout == built.bumped
    with open(root.file(PYPRIVATE + "/netoffload/__init__.py")) as handle:
        assert '__version__ = "%s"' % built.bumped in handle.read().splitlines()


@pytest.mark.root
@pytest.mark.parametrize("with_record", [False, True], ids=["no-record", "unreverted-record"])
def test_erase_stops_units_and_removes_files(built, tmp_path, with_record):
    root = RpmRoot(tmp_path / "root")
    assert root.rpm("-i", built.v1).returncode == 0
    root.calls()
    # What %post's compileall leaves with a real python3.
    pycache = root.file(PYPRIVATE + "/netoffload/__pycache__")
    os.makedirs(pycache)
    open(os.path.join(pycache, "cli.cpython-36.pyc"), "w").close()
    record = root.file(LIVE_STATE)
    if with_record:
        with open(record, "w") as handle:
            handle.write("{}\n")
    proc = root.rpm("-e", "netoffload")
    assert proc.returncode == 0, proc.stderr
    assert root.calls() == ERASE_CALLS
    for path, _mode in EXPECTED:
        if path != "/var/lib/netoffload":
            assert not os.path.lexists(root.file(path)), path
    assert not os.path.lexists(root.file("/usr/lib/netoffload"))
    # A record not yet reverted survives for a reinstall; an empty dir goes.
    assert os.path.exists(record) == with_record
    assert os.path.isdir(root.file("/var/lib/netoffload")) == with_record
