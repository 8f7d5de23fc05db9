"""statedir.atomic_write: whole files, 0600, nothing left behind."""
import os
import stat

import pytest

from netoffload import statedir


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
