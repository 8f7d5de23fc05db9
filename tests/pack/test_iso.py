"""The supplemental pack ISO, built by pack/build.py with the real rpmbuild,
createrepo_c, gpg and xorriso, read back with pycdlib, and checked the way
xapi checks it (Xapi_pool_update: parse_update_info, verify with gpg
--status-fd requiring GOODSIG and TRUST_ULTIMATE, a yum repo with
gpgcheck and repo_gpgcheck and `install @update`).
"""
import glob
import gzip
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tarfile
import uuid
import xml.etree.ElementTree as ET

import pytest

from tests.support import layout, tools
from tests.support.tools import check, require_module, require_tool, run

ROOT = layout.REPO
BUILD_PY = os.path.join(ROOT, "pack", "build.py")
REPO_NS = "{http://linux.duke.edu/metadata/repo}"
COMMON_NS = "{http://linux.duke.edu/metadata/common}"

PACK_TOOLS = ("rpmbuild", "rpm", "rpmsign", "rpmkeys", "createrepo_c", "xorriso", "gpg",
              "gpgconf")


@pytest.fixture(scope="module", autouse=True)
def pack_tools():
    """Skips locally, fails under CI=true, without the tools (before `pack`)."""
    for name in PACK_TOOLS:
        require_tool(name)
    require_module("pycdlib")


def tree_version():
    namespace = {}
    with open(os.path.join(ROOT, "netoffload", "__init__.py")) as handle:
        exec(compile(handle.read(), "__init__.py", "exec"), namespace)
    return namespace["__version__"]


def build_env(**extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("NETOFFLOAD_GPG_KEY", "NETOFFLOAD_GNUPGHOME")}
    env.update(extra)
    return env



def read_iso(path):
    """{rock ridge path: bytes} for every file, and the volume id."""
    iso = require_module("pycdlib").PyCdlib()
    iso.open(path)
    try:
        assert iso.has_rock_ridge()
        files = {}
        for dirname, _dirs, filenames in iso.walk(rr_path="/"):
            for name in filenames:
                rr_path = dirname.rstrip("/") + "/" + name
                buf = io.BytesIO()
                iso.get_file_from_iso_fp(buf, rr_path=rr_path)
                files[rr_path.lstrip("/")] = buf.getvalue()
        volume_id = iso.pvd.volume_identifier.decode("ascii").strip()
    finally:
        iso.close()
    return files, volume_id


class Pack(object):
    pass


def build_pack(base, env):
    pack = Pack()
    pack.version = tree_version()
    pack.outdir = str(base / "dist")
    # %check's pytest run is test_pack_rpm's business: the quick selftest here.
    proc = run([sys.executable, BUILD_PY, "pack", "--outdir", pack.outdir,
                "--builddir", str(base / "build"), "--check", "selftest"]
               + tools.allow_incomplete(), env=env)
    assert proc.returncode == 0, proc.stderr
    pack.stderr = proc.stderr
    pack.iso = os.path.join(pack.outdir, "netoffload-%s.iso" % pack.version)
    pack.pubkey = os.path.join(pack.outdir, "netoffload-%s.pubkey.asc" % pack.version)
    pack.files, pack.volume_id = read_iso(pack.iso)
    pack.unpacked = base / "unpacked"
    for name, data in pack.files.items():
        target = pack.unpacked / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(data)
    pack.update = ET.fromstring(pack.files["update.xml"])
    rpms = [n for n in pack.files if n.endswith(".rpm")]
    assert len(rpms) == 1, rpms
    pack.rpm_name = rpms[0]
    pack.rpm = str(pack.unpacked / pack.rpm_name)
    return pack


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    """The pack as `make pack` builds it without a key: a throw-away dev key."""
    return build_pack(tmp_path_factory.mktemp("pack-iso"), build_env())


@pytest.fixture(scope="module")
def verifier(tmp_path_factory, pack):
    """A keyring like xapi's /opt/xensource/gpg: the public key, trusted
    ultimately, as docs/install.md tells the admin to do."""
    keyring = Keyring(str(tmp_path_factory.mktemp("xapi-gpg")), pack.pubkey)
    yield keyring
    keyring.close()


class Keyring(object):
    def __init__(self, home, pubkey):
        self.home = home
        os.makedirs(home, mode=0o700, exist_ok=True)
        os.chmod(home, 0o700)
        check(["gpg", "--batch", "--homedir", home, "--import", pubkey])
        fingerprints = [line.split(":")[9] for line in check(
            ["gpg", "--batch", "--homedir", home, "--with-colons", "--fingerprint",
             "--list-keys"]).splitlines() if line.startswith("fpr:")]
        self.fingerprint = fingerprints[0]
        check(["gpg", "--batch", "--homedir", home, "--import-ownertrust"],
              input="%s:6:\n" % self.fingerprint)

    def verify(self, signature, signed):
        """(exit code, {status keyword: [fields]}) of gpg --verify as xapi runs it."""
        proc = run(["gpg", "--batch", "--homedir", self.home, "--status-fd", "1",
                    "--verify", signature, signed])
        status = {}
        for line in proc.stdout.splitlines():
            fields = line.split()
            if fields and fields[0] == "[GNUPG:]" and len(fields) > 1:
                status[fields[1]] = fields[2:]
        return proc.returncode, status

    def close(self):
        subprocess.call(["gpgconf", "--homedir", self.home, "--kill", "gpg-agent"],
                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


# ------------------------------------------------------------ layout

@pytest.mark.parametrize("name", [
    "update.xml", "update.xml.asc", "repodata/repomd.xml", "repodata/repomd.xml.asc",
    "RPM-GPG-KEY-netoffload-dev"])
def test_iso_holds(pack, name):
    assert name in pack.files


def test_iso_holds_the_rpm_under_its_standard_name(pack):
    assert pack.rpm_name == "netoffload-%s-1.noarch.rpm" % pack.version
    with open(os.path.join(pack.outdir, "netoffload-%s.rpm" % pack.version), "rb") as handle:
        assert handle.read() == pack.files[pack.rpm_name]


def test_volume_id_is_iso9660_clean(pack):
    assert pack.volume_id == "NETOFFLOAD_" + pack.version.replace(".", "_")


def test_build_without_key_warns_loudly_and_writes_the_public_key(pack):
    assert any("THROW-AWAY" in line for line in pack.stderr.splitlines())
    with open(pack.pubkey, "rb") as handle:
        assert handle.read() == pack.files["RPM-GPG-KEY-netoffload-dev"]


# ------------------------------------------------------------ update.xml

def test_update_xml_root_and_description(pack):
    assert pack.update.tag == "update"
    children = list(pack.update)
    assert [c.tag for c in children] == ["name-description"]
    # xapi takes exactly one PCData child.
    assert children[0].text.strip() and list(children[0]) == []


def _expected_uuid(version):
    with open(os.path.join(ROOT, "pack", "pack-uuid")) as handle:
        return str(uuid.uuid5(uuid.UUID(handle.read().strip()), "netoffload-" + version))


def test_update_uuid_is_fixed_per_version(pack):
    assert pack.update.get("uuid") == _expected_uuid(pack.version)
    assert uuid.UUID(pack.update.get("uuid"))


def test_update_name_label_is_a_yum_section_name(pack):
    # xapi writes [<name-label>] into the yum config and reads it back.
    assert pack.update.get("name-label") == "netoffload"


def test_update_key_names_the_key_file_and_rpm_is_signed(pack):
    assert pack.update.get("key") == "RPM-GPG-KEY-netoffload-dev"
    assert pack.update.get("key") in pack.files
    sig = check(["rpm", "-qp", "--nosignature", "--qf", "%{RSAHEADER:pgpsig}", pack.rpm])
    assert sig != "(none)"
    # dist/ holds the key under the file name update.xml gives it (README
    # install step 1), the same key as the .pubkey.asc
    named = os.path.join(pack.outdir, pack.update.get("key"))
    with open(named, "rb") as a, open(pack.pubkey, "rb") as b:
        assert a.read() == b.read()


def test_update_installation_size_is_the_rpm_installed_size(pack):
    size = check(["rpm", "-qp", "--nosignature", "--qf", "%{SIZE}", pack.rpm])
    assert pack.update.get("installation-size") == size
    assert int(size) > 0


def packaged_plugin_version(pack, workdir):
    """What the pack's own plugin answers to `version` through the
    simulator's host.call_plugin, importing the pack's own library."""
    from tests.support.simpool import SimPool
    copy = str(workdir / "pack.rpm")
    shutil.copyfile(pack.rpm, copy)
    check(["rpm2archive", copy])  # writes pack.rpm.tgz
    tree = workdir / "tree"
    with tarfile.open(copy + ".tgz") as archive:
        archive.extractall(str(tree))
    with SimPool(plugin_dir=str(tree / "etc/xapi.d/plugins")) as pool:
        # The packaged library where the RPM puts it, in place of the
        # source tree's.
        library = "/usr/lib/netoffload/python/netoffload"
        pool.add_host("h1", dom0_files={
            library: str(tree / library.lstrip("/"))})
        assert os.path.isdir(str(tree / library.lstrip("/")))
        return pool.call("version", host="h1")


@pytest.mark.root  # the plugin runs in a private mount namespace
def test_version_is_the_same_in_all_four_places(pack, tmp_path):
    """__version__, setup.py and the RPM Version, update.xml, and the
    packaged plugin's `version` function."""
    setup_version = check([sys.executable, "setup.py", "--version"], cwd=ROOT).splitlines()[-1]
    rpm_version = check(["rpm", "-qp", "--nosignature", "--qf", "%{VERSION}", pack.rpm])
    plugin = packaged_plugin_version(pack, tmp_path)
    sys.path.insert(0, ROOT)
    try:
        import netoffload
    finally:
        sys.path.pop(0)
    assert {netoffload.__version__, setup_version, rpm_version,
            pack.update.get("version"), plugin["version"]} == {pack.version}
    assert plugin["api"] == netoffload.API_LEVEL


# ------------------------------------------------------------ signatures

SIGNED = ["update.xml", "repodata/repomd.xml"]


@pytest.mark.parametrize("name", SIGNED)
def test_signature_verifies_as_xapi_requires(pack, verifier, name):
    path = str(pack.unpacked / name)
    code, status = verifier.verify(path + ".asc", path)
    assert code == 0
    assert "GOODSIG" in status and "TRUST_ULTIMATE" in status
    assert status["VALIDSIG"][0] == verifier.fingerprint


@pytest.mark.parametrize("name", SIGNED)
def test_signature_fails_after_one_byte_changes(pack, verifier, name, tmp_path):
    data = bytearray(pack.files[name])
    data[len(data) // 2] ^= 0x01
    tampered = tmp_path / os.path.basename(name)
    tampered.write_bytes(bytes(data))
    code, status = verifier.verify(str(pack.unpacked / name) + ".asc", str(tampered))
    assert code != 0
    assert "BADSIG" in status and "GOODSIG" not in status


def test_signature_is_ascii_armoured(pack):
    for name in SIGNED:
        first = pack.files[name + ".asc"].decode("ascii").splitlines()[0]
        assert first == "-----BEGIN PGP SIGNATURE-----"


def test_rpm_signature_checks_only_with_the_key(pack, tmp_path):
    dbpath = str(tmp_path / "rpmdb")
    os.makedirs(dbpath)
    without = run(["rpmkeys", "--dbpath", dbpath, "--checksig", pack.rpm])
    assert without.returncode != 0
    check(["rpmkeys", "--dbpath", dbpath, "--import", pack.pubkey])
    check(["rpmkeys", "--dbpath", dbpath, "--checksig", pack.rpm])


# ------------------------------------------------------------ repodata

def _repomd_data(pack):
    repomd = ET.fromstring(pack.files["repodata/repomd.xml"])
    return {d.get("type"): d for d in repomd.findall(REPO_NS + "data")}


def _repo_file(pack, data):
    href = data.find(REPO_NS + "location").get("href")
    blob = pack.files[href]
    checksum = data.find(REPO_NS + "checksum")
    assert checksum.get("type") == "sha256"
    assert hashlib.sha256(blob).hexdigest() == checksum.text
    return blob


def test_repomd_primary_names_the_rpm_with_its_checksum(pack):
    primary = ET.fromstring(gzip.decompress(_repo_file(pack, _repomd_data(pack)["primary"])))
    packages = primary.findall(COMMON_NS + "package")
    assert [p.find(COMMON_NS + "name").text for p in packages] == ["netoffload"]
    package = packages[0]
    assert package.find(COMMON_NS + "location").get("href") == pack.rpm_name
    checksum = package.find(COMMON_NS + "checksum")
    assert checksum.get("type") == "sha256"
    assert checksum.text == hashlib.sha256(pack.files[pack.rpm_name]).hexdigest()
    assert package.find(COMMON_NS + "version").get("ver") == pack.version


def test_comps_group_update_lists_netoffload(pack):
    comps = ET.fromstring(_repo_file(pack, _repomd_data(pack)["group"]))
    groups = {g.findtext("id"): g for g in comps.findall("group")}
    assert "update" in groups
    members = [r.text for r in groups["update"].find("packagelist").findall("packagereq")]
    assert members == ["netoffload"]


# ------------------------------------------------------------ a real key

def test_pack_signed_with_named_key(tmp_path):
    """NETOFFLOAD_GPG_KEY + NETOFFLOAD_GNUPGHOME: the production path."""
    home = tmp_path / "signer"
    home.mkdir(mode=0o700)
    uid = "netoffload release test <release@netoffload.invalid>"
    check(["gpg", "--batch", "--homedir", str(home), "--pinentry-mode", "loopback",
           "--passphrase", "", "--quick-generate-key", uid, "rsa2048", "sign", "never"])
    try:
        pack = build_pack(tmp_path, build_env(NETOFFLOAD_GPG_KEY=uid,
                                              NETOFFLOAD_GNUPGHOME=str(home)))
        assert not any("THROW-AWAY" in line for line in pack.stderr.splitlines())
        assert pack.update.get("key") == "RPM-GPG-KEY-netoffload"
        assert "RPM-GPG-KEY-netoffload" in pack.files
        keyring = Keyring(str(tmp_path / "xapi-gpg"), pack.pubkey)
        try:
            for name in SIGNED:
                path = str(pack.unpacked / name)
                code, status = keyring.verify(path + ".asc", path)
                assert code == 0 and "TRUST_ULTIMATE" in status
        finally:
            keyring.close()
        assert not glob.glob(str(tmp_path / "build" / "dev-gnupg"))
    finally:
        subprocess.call(["gpgconf", "--homedir", str(home), "--kill", "gpg-agent"])
