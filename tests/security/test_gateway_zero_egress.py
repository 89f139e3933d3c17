"""Zero egress, proven: the whole ``schulki up`` stack in a network namespace with only loopback, every feature used.

Every process of the stack runs under ``strace -f``; the test fails if any of
them tried to connect or send to an address outside loopback (a DNS lookup, a
telemetry call, a model download, a font). In a namespace with no route out
such a try fails at once, so it would go unnoticed by a test that only looks
at whether the features work: the trace is what proves it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from schulki.models.defaults import chat_model_path, embeddings_model_path, speech_model_path

from tests.conftest import ARTIFACTS, REPO_ROOT

TIME_LIMIT_S = 900

MISSING = [tool for tool in ("unshare", "strace", "ip", "espeak-ng") if shutil.which(tool) is None]
pytestmark = [
    pytest.mark.skipif(os.geteuid() != 0, reason="a network namespace (unshare -n) needs root; CI runs as root"),
    pytest.mark.skipif(bool(MISSING), reason=f"missing tools: {', '.join(MISSING)} (apt-get install util-linux strace iproute2 espeak-ng)"),
    pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian's chromium is not installed (apt-get install chromium)"),
]


@pytest.fixture(scope="module")
def egress(tmp_path_factory) -> dict:
    pytest.importorskip("playwright.sync_api", reason="Playwright for Python is not installed")
    out = tmp_path_factory.mktemp("egress") / "result.json"
    env = {
        **os.environ,
        "SCHULKI_INFERENCE__MODEL_PATH": str(chat_model_path()),
        "SCHULKI_EMBEDDINGS__MODEL_PATH": str(embeddings_model_path()),
        "SCHULKI_TRANSCRIPTION__MODEL_PATH": str(speech_model_path()),
        "SCHULKI_INFERENCE__THREADS": "1",
        "SCHULKI_EMBEDDINGS__THREADS": "1",
        "SCHULKI_TRANSCRIPTION__THREADS": "2",
        "SCHULKI_TRANSCRIPTION__BEAM_SIZE": "1",
        "SCHULKI_GATEWAY__MAX_CHAT_TOKENS": "16",
    }
    env.pop("SCHULKI_CONFIG", None)
    done = subprocess.run(
        ["unshare", "-n", "--", sys.executable, "-m", "tests.security.egress_driver", str(out)],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIME_LIMIT_S,
    )
    assert done.returncode == 0 and out.exists(), done.stderr[-3000:]
    shutil.copy(out, ARTIFACTS / "zero-egress.json")  # what each feature gave, and every outside address any process named
    return json.loads(out.read_text())


def test_every_feature_works_without_a_network(egress):
    """Checks the stack really ran and served every feature inside the namespace (else the trace would prove nothing)."""
    assert not egress["errors"], egress["errors"][0] + egress.get("up_log_tail", "")
    interfaces = egress["interfaces"].strip().splitlines()
    assert len(interfaces) == 1 and interfaces[0].startswith("1: lo:"), interfaces  # loopback only
    assert egress["api_models"][0] == "schulki-chat" and egress["api_chat"] == 200 and egress["api_chat_stream_chunks"] >= 3
    assert egress["api_embeddings"] == 2 and egress["api_transcription"] == 200
    assert egress["browser_chat"] and egress["browser_documents"] and egress["browser_translate"] and egress["browser_logout"]
    assert egress["browser_transcript_download"].startswith("1\n")
    assert egress["browser_admin"] >= 4  # the admin sees all four services ready
    assert egress["traced_calls"] > 10  # the trace saw the stack's own loopback traffic


@pytest.mark.parametrize("program", ["up", "gateway", "inference", "embeddings", "retrieval"])
def test_no_process_of_the_stack_tried_to_reach_outside_loopback(egress, program):
    """Attacks: nothing in particular; proves that schulki itself sends nothing out of the school (DNS, telemetry, downloads)."""
    assert egress["attempts"].get(program, []) == [], "\n".join(egress["attempts"][program][:20])
    assert not egress["attempts"].get("unknown") and not egress["attempts"].get("other"), egress["attempts"]


def test_the_transcription_service_tried_to_reach_nothing_outside_loopback(egress):
    """Attacks: onnxruntime's telemetry (faster-whisper's VAD), which looked up mobile.events.data.microsoft.com while transcribing."""
    assert egress["attempts"].get("transcription", []) == [], "\n".join(egress["attempts"]["transcription"][:20])


def test_what_the_gateway_writes_is_private_in_schulki_up_mode(egress):
    """Attacks: other local users reading accounts (with chats), uploads or the secret of a running ``schulki up`` (finding 8)."""
    assert egress["modes"] == {"gateway": "0o700", "accounts.sqlite3": "0o600", "uploads": "0o700", "secret": "0o600"}, egress["modes"]
