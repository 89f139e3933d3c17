"""Setting up the default models: llama.cpp's converter is unpacked from the llama-cpp-python source package, on any
Python 3.11 (Debian 12's 3.11.2 has no tarfile filters; schulki checks the members itself there)."""

from __future__ import annotations

import io
import stat
import tarfile
from pathlib import Path

import pytest
from schulki.models.defaults import extract


def archive(path: Path) -> Path:
    """A source package with a good file, a set-uid file, one that climbs out of the target and a link out of it."""
    with tarfile.open(path, "w:gz") as tar:
        for name, mode in (("pkg/vendor/convert.py", 0o644), ("pkg/vendor/tool", 0o4755), ("../outside.py", 0o644)):
            data = b"print('hallo')\n"
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), mode
            tar.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("pkg/vendor/passwd")
        link.type, link.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(link)
    return path


def test_only_plain_files_inside_the_target_are_unpacked_and_without_set_uid(tmp_path):
    target = tmp_path / "cache"
    target.mkdir()
    with tarfile.open(archive(tmp_path / "pkg.tar.gz")) as tar:
        members = {m.name: m for m in tar.getmembers()}
        extract(tar, [members["pkg/vendor/convert.py"], members["pkg/vendor/tool"]], target)
        for bad in ("../outside.py", "pkg/vendor/passwd"):
            with pytest.raises(tarfile.TarError):
                extract(tar, [members[bad]], target)
    assert (target / "pkg/vendor/convert.py").read_bytes() == b"print('hallo')\n"
    assert not (target / "pkg/vendor/tool").stat().st_mode & stat.S_ISUID
    assert not (tmp_path / "outside.py").exists() and not (target / "pkg/vendor/passwd").is_symlink()
