"""``schulki models add``: a damaged, foreign or altered file is refused with one line; a good one is served without a gateway restart."""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from schulki.models.defaults import chat_model_path
from schulki.models.install import ModelCheckError, check_gguf, installed

from tests.up_stack import UpProcess

DEMO = chat_model_path()


def models_add(data_dir: Path, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "SCHULKI_DATA_DIR": str(data_dir)}
    return subprocess.run(
        [sys.executable, "-m", "schulki.cli", "models", "add", *map(str, args)], env=env, capture_output=True, text=True, timeout=300
    )


def refused(run: subprocess.CompletedProcess, data_dir: Path) -> str:
    """The refusal's one line; nothing was copied or recorded."""
    assert run.returncode == 2, run
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("schulki models add: "), run.stderr
    assert not (data_dir / "models").exists() or not any((data_dir / "models").iterdir())
    return lines[0]


@pytest.fixture()
def usb(tmp_path) -> Path:
    folder = tmp_path / "usb"
    folder.mkdir()
    return folder


def test_a_truncated_file_is_refused(tmp_path, usb):
    cut = usb / DEMO.name  # the catalog's file name, but the copy broke off after 20 MB
    with DEMO.open("rb") as source, cut.open("wb") as target:
        target.write(source.read(20 * 1024 * 1024))
    line = refused(models_add(tmp_path, cut), tmp_path)
    assert "abgeschnitten" in line and "truncated" in line


def test_a_file_that_is_not_gguf_is_refused(tmp_path, usb):
    fake = usb / "modell.gguf"
    fake.write_text("Das ist ein Aufsatz über Vulkane, kein Modell.\n" * 100)
    line = refused(models_add(tmp_path, fake), tmp_path)
    assert "keine lesbare GGUF-Datei" in line and "not a GGUF file" in line


def gguf_start(tensors: int, pairs: int) -> bytes:
    """The first bytes of a GGUF file (version 3): the counts of tensors and key/value pairs."""
    return b"GGUF" + struct.pack("<IQQ", 3, tensors, pairs)


@pytest.mark.parametrize(
    ("header", "why"),
    [
        # one key whose string claims 600 MiB (the file is that long, sparse): no real header comes near it
        (gguf_start(0, 1) + struct.pack("<Q", 1) + b"a" + struct.pack("<IQ", 8, 600 << 20), "larger than 512 MiB"),
        # a tensor of 2**31 dimensions: ggml has at most 4
        (gguf_start(1, 0) + struct.pack("<Q", 1) + b"t" + struct.pack("<I", 1 << 31), "2147483648 dimensions"),
    ],
    ids=["a-600-MiB-string", "a-tensor-of-2**31-dimensions"],
)
def test_a_damaged_length_is_refused_without_reading_the_file_into_memory(usb, header, why):
    damaged = usb / "modell.gguf"
    with damaged.open("wb") as f:
        f.write(header)
        f.truncate(1 << 30)  # 1 GiB, sparse: a reader that trusted the length would take it all into memory
    with pytest.raises(ModelCheckError, match="keine lesbare GGUF-Datei") as refusal:
        check_gguf(damaged)
    assert why in str(refusal.value)


def test_a_file_whose_sha256_differs_from_the_catalog_is_refused(tmp_path, usb):
    altered = usb / DEMO.name
    shutil.copyfile(DEMO, altered)
    with altered.open("r+b") as f:  # one byte of the last tensor's weights: header and size stay right
        f.seek(-1000, os.SEEK_END)
        byte = f.read(1)
        f.seek(-1000, os.SEEK_END)
        f.write(bytes([byte[0] ^ 0xFF]))
    line = refused(models_add(tmp_path, altered), tmp_path)
    assert "Prüfsumme" in line and "differs from the catalog" in line


def test_an_embedding_model_is_not_a_chat_model(tmp_path):
    from schulki.models.defaults import embeddings_model_path

    line = refused(models_add(tmp_path, embeddings_model_path()), tmp_path)
    assert "kein Chat-Modell" in line


def test_the_demo_file_passes_the_checks():
    metadata, digest = check_gguf(DEMO)
    assert metadata["general.architecture"] == "gemma3" and digest == "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818"


def start_up(data_dir: Path) -> UpProcess:
    """``schulki up --services inference`` with the demo model, small enough for a busy machine."""
    settings = {"MODEL_PATH": str(DEMO), "THREADS": "1", "CONTEXT_LENGTH": "512", "BATCH_SIZE": "64"}
    return UpProcess(data_dir, ("inference",), env={f"SCHULKI_INFERENCE__{key}": value for key, value in settings.items()})


def test_a_good_file_is_served_without_restarting_the_gateway(tmp_path, usb):
    up = start_up(tmp_path)
    try:
        up.wait_for("Stop with Ctrl-C.")
        key = re.search(r"API-Key: (\S+)", "".join(up.output))[1]
        headers = {"Authorization": f"Bearer {key}"}

        def model_ids() -> list[str]:
            return [m["id"] for m in httpx.get(f"{up.url}/v1/models", headers=headers, timeout=30).json()["data"]]

        assert model_ids()[:2] == ["schulki-chat", "gemma-3-270m"] and "demo-zwei" not in model_ids()
        copy = usb / DEMO.name
        shutil.copyfile(DEMO, copy)  # as it arrives on a USB stick, under the catalog's name: its sha256 is checked
        added = models_add(tmp_path, copy, "--name", "demo-zwei")
        assert added.returncode == 0 and "demo-zwei" in added.stdout, added.stderr
        assert [e.name for e in installed(tmp_path / "models")] == ["demo-zwei"] and (tmp_path / "models" / DEMO.name).exists()

        deadline = time.monotonic() + 120
        while "demo-zwei" not in model_ids():
            assert time.monotonic() < deadline, "".join(up.output)
            time.sleep(0.5)
        while True:  # listed as soon as the stack names it; answered once its process has loaded the model
            answer = httpx.post(
                f"{up.url}/v1/chat/completions",
                headers=headers,
                timeout=120,
                json={"model": "demo-zwei", "messages": [{"role": "user", "content": "Hallo"}], "max_tokens": 4},
            )
            if answer.status_code != 503 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        assert answer.status_code == 200, answer.text
        assert answer.json()["model"] == "demo-zwei" and answer.json()["choices"][0]["message"]["content"] is not None
        assert up.process.poll() is None and not any("exited" in line for line in up.output)  # the gateway never stopped
    finally:
        up.stop()
