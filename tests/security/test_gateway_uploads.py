"""Attacks on the web page's upload route: filling the gateway's disk, and deleting another student's identical upload.

Findings 6 and 11 of issue 19. The security stack allows 16 MiB of uploads per
user at once (``gateway.ui_upload_mb_per_user``) and the default of 10 upload
requests per minute (``gateway.ui_uploads_per_minute``).
"""

from __future__ import annotations

import os
import time
import uuid

from schulki.gateway.privacy import retention
from schulki.gateway.web.gradio_uploads import user_upload_folder

from tests.security.conftest import MIB, file_payload, gradio_call, make_user, upload


def test_uploads_beyond_a_users_quota_are_refused_until_hers_are_gone(security_stack, student, other_student):
    """Attacks: 20 uploads of 5 MiB in a burst (all accepted and kept for an hour before), to fill the gateway's disk (finding 6)."""
    statuses = []
    with student.browser() as client:
        for number in range(20):
            content = os.urandom(5 * MIB)
            response = client.post("/gradio_api/upload", files=[("files", (f"gross-{number}.bin", content))])
            statuses.append(response.status_code)
            if response.status_code != 200:
                refusal = response
        assert statuses.count(200) == 3, statuses  # 15 MiB of 16: the fourth would pass the quota
        assert set(statuses[3:]) == {413}, statuses
        assert "höchstens 16 MiB" in refusal.json()["detail"] and "quota" in refusal.json()["detail"]
        held = sum(f.stat().st_size for f in user_upload_folder(student.account.id).rglob("*") if f.is_file())
        assert held <= 16 * MIB
        with other_student.browser() as other:  # the quota is each user's own: the class goes on uploading
            upload(other, "arbeitsblatt.txt", b"Aufgabe 1")
        # once the uploads are gone (used by their event, or purged after upload_retention_hours) there is room again
        retention.purge_uploads(user_upload_folder(student.account.id), time.time() + 1)
        upload(client, "klein.txt", b"wieder Platz")


def test_more_than_the_rate_of_uploads_is_refused_with_retry_after(security_stack):
    """Attacks: a burst of small uploads (no quota is reached), to keep the gateway parsing uploads (finding 6)."""
    user = make_user(security_stack, "student", ("7a",))
    with user.browser() as client:
        answers = [client.post("/gradio_api/upload", files=[("files", (f"k{n}.txt", f"klein {n}".encode()))]) for n in range(14)]
    statuses = [a.status_code for a in answers]
    limit = security_stack.config.gateway.ui_uploads_per_minute
    assert statuses == [200] * limit + [429] * (14 - limit), statuses
    with user.browser() as client:  # the same route by another spelling is the same route
        for path in ("/gradio_api/upload/", "/en/gradio_api/upload", "/gradio_api//upload", "/gradio_api/upload?upload_id=abc"):
            other = client.post(path, files=[("files", ("k.txt", b"klein"))])
            assert other.status_code != 200, (path, other.status_code, other.text)
    refused = answers[-1]
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert f"höchstens {limit} pro Minute" in refused.json()["detail"]
    with user.browser() as api:  # an upload without a login is refused before it is read
        api.cookies.clear()
        assert api.post("/gradio_api/upload", files=[("files", ("x.txt", b"x"))]).status_code == 401


def test_identical_uploads_of_two_students_are_two_files_and_neither_can_delete_the_others(security_stack, student, other_student):
    """Attacks: upload the same file as another student (one shared cache path before), then have admin_import delete it (finding 11)."""
    content = f"Klassenliste {uuid.uuid4()}: name,role,classes\n".encode()
    with student.browser() as her, other_student.browser() as him:
        hers = upload(her, "liste.csv", content)
        his = upload(him, "liste.csv", content)
        assert os.path.realpath(hers) != os.path.realpath(his)
        status, event, body = gradio_call(him, "admin_import", [file_payload(his)])
        assert status == 200 and event == "error" and "Nur für Admins" in str(body), (status, event, body)
        assert os.path.exists(hers), "a student's event deleted another student's upload"
        assert os.path.exists(his), "admin_import deleted a student's file before it checked the role"
        # an event that is refused deletes the upload it was given (it may be an essay): his copy, never hers
        status, event, body = gradio_call(him, "documents_upload", ["k-7b", file_payload(his)])
        assert status == 200 and event == "error", (status, event, body)
        assert not os.path.exists(his) and os.path.exists(hers)
        status, _event, body = gradio_call(him, "admin_import", [file_payload(hers)])  # naming hers is refused outright
        assert status == 403 and "gehört nicht dir" in body
        assert her.get(f"/gradio_api/file={hers}").content == content
        assert him.get(f"/gradio_api/file={hers}").status_code == 404
