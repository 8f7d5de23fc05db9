#!/usr/bin/env python3
"""Builds the netoffload RPM and the signed supplemental pack ISO.

    pack/build.py rpm    -> dist/netoffload-X.Y.Z.unsigned.rpm (unsigned)
                            or, signed (NETOFFLOAD_GPG_KEY set, or --sign),
                            dist/netoffload-X.Y.Z.rpm and the standard
                            netoffload-X.Y.Z-R.noarch.rpm name
    pack/build.py pack   -> dist/netoffload-X.Y.Z.iso and the signed
                            dist/netoffload-X.Y.Z.rpm and the public key
                            dist/netoffload-X.Y.Z.pubkey.asc (also under the
                            name update.xml's `key` gives it: dist/KEYFILE,
                            RPM-GPG-KEY-netoffload, or with the throw-away
                            development key RPM-GPG-KEY-netoffload-dev)

An unsigned RPM never takes a signed build's name, so `make rpm` after
`make pack` leaves the signed RPM beside the pack.

The version comes from netoffload/__init__.py (`__version__`), the one
version source. Signing uses the key named by NETOFFLOAD_GPG_KEY (key id or
fingerprint) in NETOFFLOAD_GNUPGHOME or the default keyring; without it a
throw-away development key is made under the build directory, loudly.

The RPM's %check runs the project's tests that need no root (pytest, about
10 s) when this python can import pytest, pytest-mock and XenAPI, and says
so with the test counts; otherwise only the stdlib pack/selftest.py
(`--check` chooses explicitly).

This runs on the build machine, not in dom0. It installs its tools on
Debian when run as root, else it fails with the apt-get command to run.
"""
import argparse
import glob
import importlib.util
import io
import os
import re
import shutil
import subprocess
import sys
import tarfile
import uuid
import xml.etree.ElementTree as ET

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACK = os.path.join(ROOT, "pack")
NAME = "netoffload"
NAME_LABEL = "netoffload"
DESCRIPTION = ("Pool-wide NIC offload policy (ethtool rx tx sg tso ufo gso gro lro) "
               "for PIFs, VIFs and emulated NICs, applied at boot, bring-up and VM start, "
               "with exact revert and checksum diagnostics.")
# The file in /etc/pki/rpm-gpg that update.xml's `key` names: xapi writes
# gpgkey=file:///etc/pki/rpm-gpg/<key> into the yum config it applies with.
KEY_FILE = "RPM-GPG-KEY-netoffload"
DEV_KEY_FILE = "RPM-GPG-KEY-netoffload-dev"
DEV_KEY_UID = "netoffload development key (NOT FOR PRODUCTION) <dev@netoffload.invalid>"
# What goes into the source tarball: the shipped code, the packaging, and
# the tests that %check may run.
SOURCE_TOP = ("netoffload", "plugins", "udev", "init", "pack", "tests", "sim",
              "docs", "setup.py", "pyproject.toml", "README.md", "LICENSE",
              "Makefile", "requirements-test.txt")
# What a release RPM needs from the other parts of the tree.
REQUIRED_SOURCES = ("plugins/netoffload", "init/netoffload-boot.service",
                    "init/netoffload-watch.service", "netoffload/cli/__init__.py",
                    "netoffload/agents/udev.py", "netoffload/agents/watch.py",
                    "netoffload/agents/boot.py")
# binary -> Debian package providing it
TOOLS = {
    "rpmbuild": "rpm", "rpm": "rpm", "rpmsign": "rpm",
    "createrepo_c": "createrepo-c", "xorriso": "xorriso",
    "gpg": "gnupg", "gpgconf": "gnupg",
}
RPM_TOOLS = ("rpmbuild", "rpm", "rpmsign", "gpg", "gpgconf")
PACK_TOOLS = RPM_TOOLS + ("createrepo_c", "xorriso")
COMMAND_TIMEOUT = 600
# What the no-root tests import beyond the standard library: with all of it
# importable by this python, %check runs them (check "auto").
PYTEST_CHECK_MODULES = ("pytest", "pytest_mock", "XenAPI")
# Where %check's pytest writes its JUnit XML report, under the rpmbuild topdir.
CHECK_REPORT = "check-pytest.xml"


class BuildError(Exception):
    """A build step failed; the message says which and why."""


def log(message):
    sys.stderr.write("build: %s\n" % message)


def run(argv, env=None, cwd=None, input_text=None):
    """Runs a command (argument list, no shell) and returns its stdout."""
    try:
        proc = subprocess.run(argv, env=env, cwd=cwd, input=input_text,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              universal_newlines=True, timeout=COMMAND_TIMEOUT)
    except subprocess.TimeoutExpired as err:
        raise BuildError("timed out after %ss: %s" % (COMMAND_TIMEOUT, " ".join(argv))) from err
    if proc.returncode != 0:
        raise BuildError("%s failed (exit %d):\n%s%s" % (
            " ".join(argv), proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:]))
    return proc.stdout


def read_version(root=ROOT):
    with open(os.path.join(root, NAME, "__init__.py")) as handle:
        match = re.search(r'^__version__ = "([^"]+)"$', handle.read(), re.M)
    if not match:
        raise BuildError("no __version__ in netoffload/__init__.py")
    return match.group(1)


def pack_uuid(version, root=ROOT):
    """The update's uuid: fixed per version, derived from the repo's pack uuid.

    xapi keys pool_update records by uuid: a second version under the same
    uuid would be taken for the one already applied (UPDATE_ALREADY_APPLIED),
    so each version gets its own, stable, uuid5 under the pack's namespace.
    """
    with open(os.path.join(root, "pack", "pack-uuid")) as handle:
        namespace = uuid.UUID(handle.read().strip())
    return str(uuid.uuid5(namespace, "%s-%s" % (NAME, version)))


# ---------------------------------------------------------------- tools

def ensure_tools(names):
    missing = sorted({TOOLS[n] for n in names if shutil.which(n) is None})
    if not missing:
        return
    command = ["apt-get", "install", "-y"] + missing
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        raise BuildError("missing build tools; run: sudo %s" % " ".join(command))
    log("installing %s" % " ".join(missing))
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    run(["apt-get", "update", "-qq"], env=env)
    run(["apt-get", "install", "-y", "-qq", "--no-install-recommends"] + missing, env=env)
    still = [n for n in names if shutil.which(n) is None]
    if still:
        raise BuildError("still missing after apt-get: %s" % " ".join(still))


# ---------------------------------------------------------------- sources

def source_files(root=ROOT):
    """Files of the working tree (tracked, or new and not ignored) to package."""
    try:
        listing = run(["git", "-C", root, "ls-files", "-z", "--cached", "--others",
                       "--exclude-standard"])
        names = [n for n in listing.split("\0") if n]
    except (BuildError, OSError):
        names = []
        for dirpath, dirnames, filenames in os.walk(root):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            names.extend(os.path.relpath(os.path.join(dirpath, f), root) for f in filenames)
    keep = []
    for name in sorted(set(names)):
        top = name.split("/", 1)[0]
        if top not in SOURCE_TOP or "__pycache__" in name.split("/"):
            continue
        if os.path.isfile(os.path.join(root, name)):  # deleted but tracked: skip
            keep.append(name)
    return keep


def missing_sources(root=ROOT):
    missing = [p for p in REQUIRED_SOURCES if not os.path.isfile(os.path.join(root, p))]
    if not glob.glob(os.path.join(root, "udev", "*.rules")):
        missing.append("udev/*.rules")
    return missing


def make_tarball(dest_dir, version, root=ROOT):
    """Writes NAME-version.tar.gz; with a version other than the tree's, the
    staged netoffload/__init__.py says that version (so all four places agree)."""
    prefix = "%s-%s" % (NAME, version)
    path = os.path.join(dest_dir, prefix + ".tar.gz")
    with tarfile.open(path, "w:gz") as tar:
        for name in source_files(root):
            full = os.path.join(root, name)
            info = tar.gettarinfo(full, arcname="%s/%s" % (prefix, name))
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if name == "%s/__init__.py" % NAME:
                with open(full) as handle:
                    text = re.sub(r'^__version__ = "[^"]+"$', '__version__ = "%s"' % version,
                                  handle.read(), flags=re.M)
                data = text.encode("utf-8")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                with open(full, "rb") as handle:
                    tar.addfile(info, handle)
    return path


# ---------------------------------------------------------------- signing

class Signer(object):
    """A GPG key to sign with: the user's (NETOFFLOAD_GPG_KEY) or a dev key."""

    def __init__(self, gnupghome, key, development):
        self.gnupghome = gnupghome
        self.key = key
        self.development = development
        self.fingerprint = self._fingerprint()
        self.key_file = DEV_KEY_FILE if development else KEY_FILE

    @classmethod
    def from_environment(cls, builddir):
        key = os.environ.get("NETOFFLOAD_GPG_KEY", "").strip()
        home = os.environ.get("NETOFFLOAD_GNUPGHOME", "").strip() or None
        if key:
            return cls(home or os.environ.get("GNUPGHOME") or os.path.expanduser("~/.gnupg"),
                       key, development=False)
        return cls._development(os.path.join(builddir, "dev-gnupg"))

    @classmethod
    def _development(cls, home):
        if not os.path.isdir(home):
            os.makedirs(home, mode=0o700)
        env = dict(os.environ, GNUPGHOME=home)
        listing = run(["gpg", "--batch", "--with-colons", "--list-secret-keys"], env=env)
        if not any(line.startswith("sec:") for line in listing.splitlines()):
            run(["gpg", "--batch", "--pinentry-mode", "loopback", "--passphrase", "",
                 "--quick-generate-key", DEV_KEY_UID, "rsa3072", "sign", "never"], env=env)
        sys.stderr.write(
            "\n" + "!" * 72 + "\n"
            "!! WARNING: NETOFFLOAD_GPG_KEY is not set: signing with a THROW-AWAY\n"
            "!! DEVELOPMENT KEY from %s.\n"
            "!! Hosts must import its public key to accept this pack; do not ship it.\n"
            % home + "!" * 72 + "\n\n")
        return cls(home, DEV_KEY_UID, development=True)

    def env(self):
        return dict(os.environ, GNUPGHOME=self.gnupghome)

    def _fingerprint(self):
        listing = run(["gpg", "--batch", "--with-colons", "--fingerprint",
                       "--list-secret-keys", self.key], env=self.env())
        for line in listing.splitlines():
            fields = line.split(":")
            if fields[0] == "fpr":
                return fields[9]
        raise BuildError("no secret key %r in %s" % (self.key, self.gnupghome))

    def detach_sign(self, path):
        """Writes path.asc, a detached ASCII-armoured signature."""
        signature = path + ".asc"
        if os.path.exists(signature):
            os.unlink(signature)
        run(["gpg", "--batch", "--yes", "--pinentry-mode", "loopback", "--local-user",
             self.fingerprint, "--digest-algo", "SHA256", "--armor", "--detach-sign",
             "--output", signature, path], env=self.env())
        return signature

    def export_public(self, path):
        armoured = run(["gpg", "--batch", "--armor", "--export", self.fingerprint],
                       env=self.env())
        with open(path, "w") as handle:
            handle.write(armoured)
        return path

    def sign_rpm(self, path):
        # --rpmv3 adds the header+payload signature too: the rpm 4.11 of
        # EL7-based dom0 (XenServer 8, XCP-ng 8.3) checks that one.
        run(["rpmsign", "--addsign", "--rpmv3",
             "--define", "_gpg_name %s" % self.fingerprint,
             "--define", "_gpg_path %s" % self.gnupghome,
             "--define", "__gpg %s" % shutil.which("gpg"),
             "--define", "_gpg_digest_algo sha256",
             path], env=self.env())

    def close(self):
        if self.development:  # our own agent only; never the user's
            subprocess.call(["gpgconf", "--homedir", self.gnupghome, "--kill", "gpg-agent"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)


# ---------------------------------------------------------------- %check

def missing_check_modules():
    return [m for m in PYTEST_CHECK_MODULES if importlib.util.find_spec(m) is None]


def resolve_check(requested):
    """auto -> pytest when this python can run the tests, else selftest
    (a dom0-like build host without pytest)."""
    missing = missing_check_modules()
    if requested == "pytest" and missing:
        raise BuildError("--check pytest needs %s in %s; run: %s -m pip install -r "
                         "requirements-test.txt" % (", ".join(missing), sys.executable,
                                                    sys.executable))
    if requested != "auto":
        return requested
    if missing:
        log("%%check: selftest only (%s cannot import %s)"
            % (sys.executable, ", ".join(missing)))
        return "selftest"
    return "pytest"


def check_summary(report):
    """{tests, failures, errors, skipped} from %check's JUnit XML report."""
    root = ET.parse(report).getroot()
    suites = [root] if root.tag == "testsuite" else root.findall("testsuite")
    totals = dict((k, 0) for k in ("tests", "failures", "errors", "skipped"))
    for suite in suites:
        for key in totals:
            totals[key] += int(suite.get(key, "0"))
    return totals


# ---------------------------------------------------------------- rpm

def rpm_query(path, queryformat):
    return run(["rpm", "-qp", "--nosignature", "--nodigest", "--queryformat",
                queryformat, path])


def unsigned_name(version):
    """The dist name of an unsigned RPM: never a signed build's name."""
    return "%s-%s.unsigned.rpm" % (NAME, version)


def build_rpm(opts, signer=None):
    """Builds (and signs, with a signer) the RPM; returns the dist path."""
    ensure_tools(RPM_TOOLS)
    version = opts.version or read_version()
    topdir = os.path.join(opts.builddir, "rpmbuild")
    if os.path.isdir(topdir):
        shutil.rmtree(topdir)
    for sub in ("SOURCES", "SPECS", "BUILD", "RPMS", "SRPMS", "BUILDROOT"):
        os.makedirs(os.path.join(topdir, sub))
    make_tarball(os.path.join(topdir, "SOURCES"), version)
    spec = os.path.join(topdir, "SPECS", NAME + ".spec")
    shutil.copyfile(os.path.join(PACK, NAME + ".spec"), spec)
    missing = missing_sources()
    if missing and not opts.allow_incomplete:
        raise BuildError("the tree lacks %s; a development build takes --allow-incomplete"
                         % ", ".join(missing))
    if missing:
        log("WARNING: development build without %s" % ", ".join(missing))
    check = resolve_check(opts.check)
    report = os.path.join(topdir, CHECK_REPORT)
    log("rpmbuild %s-%s-%s (check: %s)" % (NAME, version, opts.release, check))
    run(["rpmbuild", "-bb", "--quiet",
         "--define", "_topdir %s" % topdir,
         "--define", "version %s" % version,
         "--define", "pkg_release %s" % opts.release,
         "--define", "check_mode %s" % check,
         "--define", "check_report %s" % report,
         "--define", "allow_incomplete %d" % (1 if opts.allow_incomplete else 0),
         "--define", "check_python %s" % sys.executable,
         "--define", "check_tests %s" % " ".join(opts.check_tests),
         "--define", "_build_name_fmt %{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}.rpm",
         spec])
    if check == "pytest":
        totals = check_summary(report)
        log("%%check ran pytest: %(tests)d tests, %(failures)d failed, %(errors)d errors, "
            "%(skipped)d skipped" % totals + " (report %s)" % report)
    standard_name = "%s-%s-%s.noarch.rpm" % (NAME, version, opts.release)
    built = os.path.join(topdir, "RPMS", standard_name)
    os.makedirs(opts.outdir, exist_ok=True)
    if signer is None:
        # Never under a signed build's names: `make rpm` after `make pack`
        # must not put an unsigned RPM where the signed one was.
        dist = os.path.join(opts.outdir, unsigned_name(version))
        shutil.copyfile(built, dist)
        log("wrote %s (UNSIGNED: for tests and yum --nogpgcheck only; "
            "`make pack` builds the signed RPM)" % dist)
        return dist
    signer.sign_rpm(built)
    shutil.copyfile(built, os.path.join(opts.outdir, standard_name))
    dist = os.path.join(opts.outdir, "%s-%s.rpm" % (NAME, version))
    shutil.copyfile(built, dist)
    log("wrote %s (signed by %s)" % (dist, signer.fingerprint))
    return dist


# ---------------------------------------------------------------- pack

def update_xml(version, installation_size, key_file):
    """update.xml as xapi's Xapi_pool_update.parse_update_info reads it."""
    attrs = {
        "uuid": pack_uuid(version),
        "name-label": NAME_LABEL,
        "version": version,
        "installation-size": str(installation_size),
    }
    if key_file:
        attrs["key"] = key_file
    root = ET.Element("update", attrs)
    ET.SubElement(root, "name-description").text = DESCRIPTION
    return '<?xml version="1.0" encoding="UTF-8"?>\n%s\n' % ET.tostring(root, encoding="unicode")


def volume_id(version):
    # xapi mounts the ISO by VDI and ignores the label; keep it ISO 9660-clean.
    return ("%s_%s" % (NAME, version)).upper().replace(".", "_").replace("-", "_")[:32]


def build_pack(opts):
    ensure_tools(PACK_TOOLS)
    signer = Signer.from_environment(opts.builddir)
    try:
        return _build_pack(opts, signer)
    finally:
        signer.close()


def _build_pack(opts, signer):
    version = opts.version or read_version()
    rpm_path = build_rpm(opts, signer)
    stage = os.path.join(opts.builddir, "iso-root")
    if os.path.isdir(stage):
        shutil.rmtree(stage)
    os.makedirs(stage)
    rpm_name = "%s-%s-%s.noarch.rpm" % (NAME, version, opts.release)
    shutil.copyfile(rpm_path, os.path.join(stage, rpm_name))
    run(["createrepo_c", "--quiet", "--groupfile", os.path.join(PACK, "comps.xml"), stage])
    size = int(rpm_query(rpm_path, "%{SIZE}"))
    with open(os.path.join(stage, "update.xml"), "w") as handle:
        handle.write(update_xml(version, size, signer.key_file))
    signer.detach_sign(os.path.join(stage, "update.xml"))
    signer.detach_sign(os.path.join(stage, "repodata", "repomd.xml"))
    signer.export_public(os.path.join(stage, signer.key_file))
    pubkey = signer.export_public(os.path.join(opts.outdir, "%s-%s.pubkey.asc" % (NAME, version)))
    # the same key under the name update.xml gives it, which the install
    # steps (README, docs/install.md) copy to /etc/pki/rpm-gpg/
    signer.export_public(os.path.join(opts.outdir, signer.key_file))
    iso = os.path.join(opts.outdir, "%s-%s.iso" % (NAME, version))
    if os.path.exists(iso):
        os.unlink(iso)
    run(["xorriso", "-as", "mkisofs", "-quiet", "-rational-rock", "-joliet",
         "-volid", volume_id(version), "-output", iso, stage])
    log("wrote %s (update uuid %s, key file %s, public key %s)"
        % (iso, pack_uuid(version), signer.key_file, pubkey))
    return iso


# ---------------------------------------------------------------- main

def parse_args(argv=None):
    parser = argparse.ArgumentParser(description="Build the netoffload RPM or pack ISO.")
    parser.add_argument("what", choices=("rpm", "pack"))
    parser.add_argument("--outdir", default=os.path.join(ROOT, "dist"))
    parser.add_argument("--builddir", default=os.path.join(ROOT, "build"))
    parser.add_argument("--version", help="override netoffload.__version__ (test upgrades)")
    parser.add_argument("--release", default="1", help="RPM Release (default 1)")
    parser.add_argument("--check", choices=("auto", "pytest", "selftest", "none"),
                        default="auto",
                        help="what the RPM's %%check runs: pytest = the selftest and the "
                        "project's tests that need no root; auto (default) = pytest when "
                        "this python has pytest, pytest-mock and XenAPI, else selftest "
                        "(the stdlib-only selftest, for dom0-like build hosts)")
    parser.add_argument("--check-tests", nargs="+", default=["tests"],
                        metavar="PATH",
                        help="the test paths %%check's pytest runs (default: tests, "
                        "all that need no root)")
    parser.add_argument("--allow-incomplete", action="store_true",
                        help="development build: leave out a missing plugin, units or rules")
    parser.add_argument("--sign", action="store_true",
                        help="rpm: sign the RPM even without NETOFFLOAD_GPG_KEY, with the dev key "
                        "(with it set, rpm always signs; pack always signs)")
    opts = parser.parse_args(argv)
    opts.outdir = os.path.abspath(opts.outdir)
    opts.builddir = os.path.abspath(opts.builddir)
    if opts.version and not re.match(r"^[0-9][0-9A-Za-z.+~]*$", opts.version):
        parser.error("bad --version %r" % opts.version)
    if not re.match(r"^[0-9][0-9A-Za-z.]*$", opts.release):
        parser.error("bad --release %r" % opts.release)
    return opts


def main(argv=None):
    opts = parse_args(argv)
    os.makedirs(opts.builddir, exist_ok=True)
    try:
        if opts.what == "rpm":
            if opts.sign or os.environ.get("NETOFFLOAD_GPG_KEY", "").strip():
                signer = Signer.from_environment(opts.builddir)
                try:
                    build_rpm(opts, signer)
                finally:
                    signer.close()
            else:
                build_rpm(opts)
        else:
            build_pack(opts)
    except BuildError as err:
        log("ERROR: %s" % err)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
