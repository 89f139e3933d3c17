"""The model sync from the school's mirror: a good file, a wrong sha256, a download cut off halfway and resumed."""

from __future__ import annotations

import hashlib
import importlib.util
import os
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.deploy_mirror import MirrorServer, write_sha256sums

spec = importlib.util.spec_from_file_location("schulki_model_sync", REPO_ROOT / "deploy" / "library" / "schulki_model_sync.py")
model_sync = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model_sync)

CONTENT = os.urandom(3 * 1024 * 1024 + 12345)
SHA = hashlib.sha256(CONTENT).hexdigest()


@pytest.fixture()
def mirror(tmp_path):
    root = tmp_path / "mirror"
    (root / "whisper").mkdir(parents=True)
    (root / "model.gguf").write_bytes(CONTENT)
    (root / "whisper" / "config.json").write_text('{"a": 1}')
    write_sha256sums(root)
    with MirrorServer(root) as server:
        yield server


def test_a_good_file_is_downloaded_checked_and_not_read_again(mirror, tmp_path):
    dest = str(tmp_path / "models" / "model.gguf")
    changed, facts = model_sync.sync(mirror.url, "model.gguf", dest, SHA, size=len(CONTENT))
    assert changed and facts["sha256"] == SHA
    assert Path(dest).read_bytes() == CONTENT
    changed, _ = model_sync.sync(mirror.url, "model.gguf", dest, SHA, size=len(CONTENT))
    assert not changed
    assert mirror.downloads_of("model.gguf") == [None], "a checked file is not downloaded again"


def test_a_file_with_the_wrong_sha256_is_refused_and_removed(mirror, tmp_path):
    dest = tmp_path / "models" / "model.gguf"
    with pytest.raises(model_sync.SyncError, match=r"refused model\.gguf.*removed"):
        model_sync.sync(mirror.url, "model.gguf", str(dest), "0" * 64)
    assert not dest.exists() and not dest.with_name("model.gguf.part").exists()


def test_a_changed_file_on_the_host_is_replaced(mirror, tmp_path):
    dest = tmp_path / "model.gguf"
    model_sync.sync(mirror.url, "model.gguf", str(dest), SHA)
    dest.write_bytes(b"tampered")
    changed, _ = model_sync.sync(mirror.url, "model.gguf", str(dest), SHA)
    assert changed and dest.read_bytes() == CONTENT


def test_a_download_cut_off_halfway_resumes_where_it_stopped(mirror, tmp_path):
    dest = tmp_path / "model.gguf"
    mirror.cut_once.add("model.gguf")
    changed, facts = model_sync.sync(mirror.url, "model.gguf", str(dest), SHA, retries=2)
    assert changed and dest.read_bytes() == CONTENT
    half = len(CONTENT) // 2
    assert facts["resumed_from"] == half
    assert mirror.downloads_of("model.gguf") == [None, f"bytes={half}-"]


def test_a_cut_off_download_is_kept_and_resumed_by_the_next_run(mirror, tmp_path):
    dest = tmp_path / "model.gguf"
    mirror.cut_once.add("model.gguf")
    with pytest.raises(model_sync.SyncError, match="cut off"):
        model_sync.sync(mirror.url, "model.gguf", str(dest), SHA, retries=0)
    part = tmp_path / "model.gguf.part"
    assert part.stat().st_size == len(CONTENT) // 2 and not dest.exists()
    changed, facts = model_sync.sync(mirror.url, "model.gguf", str(dest), SHA, retries=0)
    assert changed and facts["resumed_from"] == len(CONTENT) // 2 and dest.read_bytes() == CONTENT


def test_a_file_without_a_pinned_hash_is_refused_before_anything_is_fetched(mirror, tmp_path):
    dest = tmp_path / "whisper" / "config.json"
    with pytest.raises(model_sync.SyncError, match=r"Keine festgelegte sha256 \(no pinned sha256\) for whisper/config\.json"):
        model_sync.sync(mirror.url, "whisper/config.json", str(dest))
    assert not dest.exists() and mirror.requests == [], "neither the file nor the mirror's SHA256SUMS is asked for"


def test_where_the_admin_allows_it_a_file_without_a_pinned_hash_is_checked_against_the_mirror_sums(mirror, tmp_path):
    dest = tmp_path / "whisper" / "config.json"
    changed, facts = model_sync.sync(mirror.url, "whisper/config.json", str(dest), allow_unpinned=True)
    assert changed and facts["sha256"] == hashlib.sha256(b'{"a": 1}').hexdigest()
    with pytest.raises(model_sync.SyncError, match="not in the mirror's SHA256SUMS"):
        model_sync.sync(mirror.url, "other.bin", str(tmp_path / "other.bin"), allow_unpinned=True)


def test_check_mode_downloads_nothing(mirror, tmp_path):
    dest = tmp_path / "model.gguf"
    changed, _ = model_sync.sync(mirror.url, "model.gguf", str(dest), SHA, check_mode=True)
    assert changed and not dest.exists() and mirror.downloads_of("model.gguf") == []
