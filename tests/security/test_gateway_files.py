"""Attacks on files through the gateway: paths on the server in event data, downloads of others' files, URL fetches.

Findings 1, 6 and the gateway's part of 8 of issue 9, and path traversal in upload names.
"""

from __future__ import annotations

import os
import stat
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from gradio.utils import get_upload_folder
from gradio_client import handle_file
from gradio_client.exceptions import AppError

from tests import gateway_stack
from tests.gateway_stack import write_pdf
from tests.security.conftest import file_payload, gradio_call, gradio_endpoints, upload

NOT_YOURS = "gehört nicht dir"
PLANTED = "Klassenliste 7a: Passwort von Mia ist Zebra-Wolke-42. Passwort von Tom ist Kaktus-Mond-17."


@pytest.fixture()
def planted(tmp_path):
    """A file on the gateway host that no user uploaded (a class list with passwords)."""
    path = tmp_path / "klassenliste.txt"
    path.write_text(PLANTED, encoding="utf-8")
    return path


def test_a_file_on_the_server_cannot_be_ingested_through_the_upload_event(security_stack, student, planted):
    """Attacks: documents_upload with {"path": "/some/server/file"} instead of an upload (finding 1)."""
    with student.browser() as client:
        status, event, body = gradio_call(client, "documents_upload", [student.account.own_workspace, file_payload(str(planted))])
        assert status == 403 and NOT_YOURS in body, (status, event, body)
        status, event, listed = gradio_call(client, "documents_list", [student.account.own_workspace])
        assert event == "complete" and "klassenliste" not in str(listed)


def test_every_event_refuses_a_foreign_path_in_any_input(security_stack, student, planted):
    """Attacks: every event with an api_name (and by fn_index through the queue), each input a path on the server (finding 1)."""
    with student.browser() as client:
        for prefix in ("", "/en"):
            endpoints = gradio_endpoints(client, prefix)
            assert len([e for e in endpoints if e["api_name"]]) >= 20  # the whole UI, not an empty config
            for endpoint in endpoints:
                data = [file_payload(str(planted))] * max(1, endpoint["inputs"])
                if endpoint["api_name"]:
                    status, _event, body = gradio_call(client, endpoint["api_name"], data, prefix)
                    assert status == 403 and NOT_YOURS in body, (prefix, endpoint, status, body)
                    run = client.post(f"{prefix}/gradio_api/run/{endpoint['api_name']}", json={"data": data})
                    assert run.status_code == 403, (endpoint, run.status_code)
                joined = client.post(
                    f"{prefix}/gradio_api/queue/join",
                    json={"data": data, "fn_index": endpoint["fn_index"], "session_hash": "attack", "event_data": None, "trigger_id": None},
                )
                assert joined.status_code == 403 and NOT_YOURS in joined.text, (endpoint, joined.status_code, joined.text)


def test_devices_links_urls_and_missing_files_get_one_and_the_same_refusal(security_stack, student, planted, tmp_path, recorder):
    """Attacks: /dev/zero (hangs the gateway), a symlink, a URL, a missing file, to probe which files exist (finding 1)."""
    link = tmp_path / "link.txt"
    link.symlink_to(planted)
    with student.browser() as client:
        answers = {}
        for path in ("/dev/zero", str(link), str(planted), str(tmp_path / "gibt-es-nicht.txt"), "/etc/passwd", "../../../etc/passwd"):
            status, _event, body = gradio_call(client, "documents_upload", [student.account.own_workspace, file_payload(path)])
            answers[path] = (status, body)
        assert len(set(answers.values())) == 1 and next(iter(answers.values()))[0] == 403, answers
        status, _event, body = gradio_call(
            client, "documents_upload", [student.account.own_workspace, file_payload(recorder.url + "/gross.pdf")]
        )
        assert status == 403 and "keine Adressen" in body
        assert recorder.connections == 0
        start = time.monotonic()
        assert httpx.get(security_stack.url + "/healthz", timeout=10).status_code == 200
        assert time.monotonic() - start < 5  # the event loop was never blocked


def test_ones_own_upload_still_works_and_is_removed_from_the_cache_afterwards(security_stack, student, tmp_path):
    """Checks the guard lets a real upload through (a fix that refuses everything would pass the tests above)."""
    pdf = write_pdf(tmp_path / "eigenes.pdf", ["Die Mitochondrien sind die Kraftwerke der Zelle."])
    with student.browser() as client:
        cached = upload(client, "eigenes.pdf", pdf.read_bytes())
        status, event, result = gradio_call(client, "documents_upload", [student.account.own_workspace, file_payload(cached)])
        assert status == 200 and event == "complete" and "eigenes.pdf" in str(result), result
        assert not os.path.exists(cached)


def test_another_users_upload_cannot_be_used(security_stack, student, other_student, tmp_path):
    """Attacks: a student sends the cache path of another student's upload (guessed or seen) to an event (finding 1)."""
    with other_student.browser() as victim:
        cached = upload(victim, "aufsatz.txt", "Mein Aufsatz über die Ferien.".encode())
    with student.browser() as client:
        status, _event, body = gradio_call(client, "documents_upload", [student.account.own_workspace, file_payload(cached)])
        assert status == 403 and NOT_YOURS in body
        assert client.get(f"/gradio_api/file={cached}").status_code == 404
    assert os.path.exists(cached)  # untouched: still the other student's


def test_a_refused_upload_does_not_stay_in_gradios_cache(security_stack, student, other_student):
    """Attacks: an upload to a workspace the student may not write, which left the file in the cache (finding 8)."""
    client = gateway_stack.ui_client(security_stack.url, student.bearer)
    essay = security_stack.config.data_dir / "aufsatz-von-anna.txt"
    essay.write_text("Mein geheimer Aufsatz.", encoding="utf-8")
    uploads = Path(get_upload_folder())  # Gradio's cache: the first gateway of this process chose it
    before = {p for p in uploads.rglob("aufsatz-von-anna.txt")}
    with pytest.raises(AppError):
        client.predict(other_student.account.own_workspace, handle_file(str(essay)), api_name="/documents_upload")
    left = {p for p in uploads.rglob("aufsatz-von-anna.txt")} - before
    assert not left, left


def test_a_transcript_is_downloadable_only_by_whoever_made_it(security_stack, student, other_student, tmp_path):
    """Attacks: another student (or a visitor) downloads a transcript by its URL (finding 8)."""
    speech = tmp_path / "stunde.wav"
    subprocess.run(
        ["espeak-ng", "-v", "de", "-s", "140", "-w", str(speech), "Guten Morgen. Heute lernen wir die Photosynthese."], check=True
    )
    client = gateway_stack.ui_client(security_stack.url, student.bearer)
    result = client.predict(handle_file(str(speech)), "de", api_name="/transcribe")
    srt_path = result[3]["value"] if isinstance(result[3], dict) else result[3]  # gradio_client downloads it: the owner can
    assert Path(srt_path).read_text(encoding="utf-8").startswith("1\n")
    served = list(Path(get_upload_folder()).rglob("transkript.srt"))
    assert served
    with other_student.browser() as thief:
        for path in served:
            assert thief.get(f"/gradio_api/file={path}").status_code == 404
    assert httpx.get(f"{security_stack.url}/gradio_api/file={served[0]}").status_code in (401, 403, 404)
    with student.browser() as owner:
        assert any(owner.get(f"/gradio_api/file={p}").status_code == 200 for p in served)


@pytest.mark.parametrize(
    "route",
    [
        "/gradio_api/file={url}/x.pdf",
        "/en/gradio_api/file={url}/x.pdf",
        "/gradio_api/proxy={url}/x",
        "/gradio_api/file=https://example.org/x.pdf",
        "/gradio_api/file/{url}/x.pdf",
    ],
)
def test_the_gateway_fetches_no_url_for_a_student(security_stack, student, recorder, route):
    """Attacks: /gradio_api/file=http://host/... and /proxy=, which make the gateway fetch and relay the internet (finding 6)."""
    with student.browser() as client:
        response = client.get(route.format(url=recorder.url))
    assert response.status_code in (403, 404) and ("keine Adressen" in response.text or NOT_YOURS in response.text), (
        route,
        response.status_code,
        response.text[:200],
    )
    assert recorder.connections == 0


@pytest.mark.parametrize("name", ["../../../../tmp/evil.txt", "..%2F..%2Fevil.txt", "/etc/cron.d/evil", "..\\..\\evil.txt", ".htaccess"])
def test_path_traversal_in_upload_names_stays_inside_the_cache(security_stack, student, name):
    """Attacks: upload file names with ../, absolute paths and backslashes, to write outside Gradio's cache."""
    uploads = Path(get_upload_folder()).resolve()
    with student.browser() as client:
        response = client.post("/gradio_api/upload", files=[("files", (name, b"boese"))])
    if response.status_code == 200:
        for path in response.json():
            assert os.path.realpath(path).startswith(str(uploads) + os.sep), path
    assert not os.path.exists("/tmp/evil.txt") and not os.path.exists("/etc/cron.d/evil")


def test_the_accounts_database_uploads_and_secret_are_private(security_stack, student):
    """Attacks: other local users reading the accounts database (chats), uploads or the pseudonym secret (finding 8)."""
    gateway_dir = security_stack.config.data_dir / "gateway"
    assert stat.S_IMODE((gateway_dir / "accounts.sqlite3").stat().st_mode) == 0o600
    assert stat.S_IMODE((gateway_dir / "secret").stat().st_mode) == 0o600
    for folder in (gateway_dir, gateway_dir / "uploads", gateway_dir / "files"):
        assert stat.S_IMODE(folder.stat().st_mode) == 0o700, folder
