"""statedir: atomic_write (whole files, 0600, nothing left behind) and
check_writable (the pre-check that names the directory and the fix)."""
import errno
import os
import stat
import subprocess

import pytest

from netoffload import statedir
from netoffload.errors import DeviceError


@pytest.mark.parametrize("data", ["one string\n", iter(["in ", "chunks", "\n"])],
                         ids=["str", "chunks"])
def test_atomic_write_replaces_the_whole_file_with_mode_0600(tmp_path, data):
    path = str(tmp_path / "cache.json")
    with open(path, "w") as handle:
        handle.write("an older, much longer content than the new one\n")
    os.chmod(path, 0o644)
    old_umask = os.umask(0o077)
    try:
        statedir.atomic_write(path, data)
    finally:
        os.umask(old_umask)
    with open(path) as handle:
        assert handle.read() in ("one string\n", "in chunks\n")
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert os.listdir(str(tmp_path)) == ["cache.json"]


def test_atomic_write_honours_the_mode_whatever_the_umask(tmp_path):
    path = str(tmp_path / "f")
    old_umask = os.umask(0o022)
    try:
        statedir.atomic_write(path, "x", mode=0o640)
    finally:
        os.umask(old_umask)
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o640


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temp(tmp_path, mocker):
    path = str(tmp_path / "f")
    statedir.atomic_write(path, "old")

    def chunks():
        yield "half of the new"
        raise OSError(28, "No space left on device")
    with pytest.raises(OSError):
        statedir.atomic_write(path, chunks())
    with open(path) as handle:
        assert handle.read() == "old"
    assert os.listdir(str(tmp_path)) == ["f"]


def test_the_rename_and_the_directory_are_synced(tmp_path, mocker):
    path = str(tmp_path / "f")
    fsync = mocker.spy(os, "fsync")
    rename = mocker.spy(os, "rename")
    statedir.atomic_write(path, "x")
    (tmp, target), _ = rename.call_args
    assert os.path.dirname(tmp) == str(tmp_path) and target == path
    assert fsync.call_count == 2  # the file, then the directory


def test_a_taken_temp_name_is_skipped(tmp_path, mocker):
    path = str(tmp_path / "f")
    mocker.patch("netoffload.statedir.os.urandom", autospec=True,
                 side_effect=[b"\x00" * 6, b"\x00" * 6, b"\x01" * 6])
    open(str(tmp_path / ".f.000000000000.tmp"), "w").close()
    statedir.atomic_write(path, "x")
    with open(path) as handle:
        assert handle.read() == "x"


# -- check_writable: the pre-check before any database or device change -----

@pytest.fixture
def tiny_fs(tmp_path):
    """A 64 KiB tmpfs of our own under tmp_path (unmounted afterwards)."""
    mount = str(tmp_path / "fs")
    os.mkdir(mount)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs",
                           mount], stderr=subprocess.PIPE,
                          universal_newlines=True)
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: %s" % done.stderr.strip())
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", mount])


def _fill(directory):
    fd = os.open(os.path.join(directory, "filler"), os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as err:
        assert err.errno == errno.ENOSPC
    finally:
        os.close(fd)


def _snapshot(root):
    return sorted((os.path.relpath(os.path.join(d, n), root),)
                  for d, dirs, files in os.walk(root) for n in dirs + files)


def test_check_writable_accepts_an_existing_and_a_creatable_directory(tmp_path):
    statedir.check_writable(str(tmp_path))
    missing = str(tmp_path / "a" / "b")
    statedir.check_writable(missing)
    assert not os.path.exists(str(tmp_path / "a"))  # it creates nothing


def test_check_writable_uses_the_state_dir_by_default(tmp_path, monkeypatch):
    target = tmp_path / "file"
    target.write_text("x")
    monkeypatch.setenv("NETOFFLOAD_STATE_DIR", str(target))
    with pytest.raises(DeviceError) as err:
        statedir.check_writable()
    assert str(target) in err.value.message
    assert "not a directory" in err.value.message


def test_check_writable_refuses_a_path_under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(DeviceError) as err:
        statedir.check_writable(str(tmp_path / "file" / "state"))
    assert "cannot create the state directory" in err.value.message


@pytest.mark.root
def test_check_writable_names_a_full_disk_and_the_fix(tiny_fs):
    state = os.path.join(tiny_fs, "state")
    os.mkdir(state)
    statedir.check_writable(state, need_bytes=16 * 1024)
    _fill(tiny_fs)
    before = _snapshot(tiny_fs)
    with pytest.raises(DeviceError) as err:
        statedir.check_writable(state)
    message = err.value.message
    assert message.startswith("no space left on %s: free some space on %s"
                              % (tiny_fs, tiny_fs)), message
    assert state in message and "nothing was changed" in message
    assert err.value.code == "NETOFFLOAD_DEVICE_ERROR"
    assert _snapshot(tiny_fs) == before


@pytest.mark.root
def test_check_writable_wants_room_to_spare(tiny_fs):
    statedir.check_writable(tiny_fs, need_bytes=32 * 1024)
    with pytest.raises(DeviceError) as err:
        statedir.check_writable(tiny_fs, need_bytes=1 << 20)
    assert "needs 1048576 bytes" in err.value.message


@pytest.mark.root
def test_check_writable_names_a_read_only_filesystem(tiny_fs):
    subprocess.run(["mount", "-o", "remount,ro", tiny_fs], check=True)
    with pytest.raises(DeviceError) as err:
        statedir.check_writable(os.path.join(tiny_fs, "state"))
    assert "read-only: remount it read-write" in err.value.message
    assert os.path.join(tiny_fs, "state") in err.value.message


@pytest.mark.root
def test_a_write_on_a_full_disk_is_a_device_error_with_its_own_message(
        tiny_fs):
    from netoffload.engine.livestate import atomic_write_json
    _fill(tiny_fs)
    path = os.path.join(tiny_fs, "live-state.json")
    with pytest.raises(DeviceError) as err:
        atomic_write_json(path, {"devices": {"x": "y" * 100000}})
    assert err.value.message.startswith("no space left on %s" % tiny_fs)
    assert path in err.value.message
    assert not os.path.exists(path)
