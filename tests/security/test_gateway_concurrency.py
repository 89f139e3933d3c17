"""The page serves a class at once, not one student after another.

Students use the page through Gradio's own HTTP API (``/gradio_api/call/<event>``
and its event stream), logged in with their session cookie, exactly as the
browser does. Gradio runs one event per listener at a time unless told
otherwise: then three students' answers came one after another, and a short
recording waited behind another student's long one. What bounds a user instead
is the engines' fair queues, the same for the page and for /v1.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from tests.gateway_stack import Stack, running_stack, stack_config
from tests.security.conftest import file_payload, make_user, upload
from tests.service_support import wait_until

LONG_ANSWER = "Zähle langsam von eins bis dreihundert, jede Zahl als Wort in einer eigenen Zeile."
LONG_SPEECH = (
    "Heute sprechen wir über den Wasserkreislauf. Das Wasser verdunstet aus den Meeren und Seen, steigt als Dampf "
    "nach oben, kühlt ab und bildet Wolken. Aus den Wolken fällt es als Regen oder Schnee wieder auf die Erde. "
) * 6


@pytest.fixture(scope="module")
def class_stack(tmp_path_factory) -> Iterator[Stack]:
    """Chat and transcription with a per-user cap small enough to reach: one running chat and one waiting per user,
    and answers long enough to be still streaming while the next request arrives."""
    folder = tmp_path_factory.mktemp("concurrency")
    config = stack_config(folder)
    config.inference.max_running_per_user = 1
    config.inference.max_queued_per_user = 1
    config.gateway.max_chat_tokens = 160
    config.gateway.requests_per_minute = {"student": 10_000, "teacher": 10_000, "admin": 10_000}
    with running_stack(folder, services=("inference", "transcription"), config=config) as running:
        yield running


@dataclass
class Stream:
    """One event called through Gradio's API: when each streamed update with text arrived, how it ended, and its last data."""

    updates: list[float] = field(default_factory=list)
    ending: str = ""
    data: object = None

    @property
    def first(self) -> float:
        return self.updates[0]

    @property
    def last(self) -> float:
        return self.updates[-1]


def stream_event(client: httpx.Client, api_name: str, data: list, has_text, into: Stream) -> None:
    """Call ``api_name`` and note the time of every streamed update for which ``has_text(data)`` holds."""
    started = client.post(f"/gradio_api/call/{api_name}", json={"data": data}, timeout=300)
    assert started.status_code == 200, started.text
    event = ""
    with client.stream("GET", f"/gradio_api/call/{api_name}/{started.json()['event_id']}", timeout=300) as response:
        for line in response.iter_lines():
            if line.startswith("event:"):
                event = line.split(":", 1)[1].strip()
            elif line.startswith("data:"):
                text = line.split(":", 1)[1].strip()
                payload = json.loads(text) if text and text != "null" else None
                if event == "generating" and payload and has_text(payload):
                    into.updates.append(time.monotonic())
                if event in ("complete", "error"):
                    into.ending, into.data = event, payload
                    return


def answer_has_text(payload) -> bool:
    history = payload[0]
    return bool(history) and bool(history[-1]["content"])


def chat_in_background(user_client: httpx.Client, message: str) -> tuple[threading.Thread, Stream]:
    stream = Stream()
    thread = threading.Thread(
        target=stream_event, args=(user_client, "chat_send", [message, [], "preset_assistant", None, None], answer_has_text, stream)
    )
    thread.start()
    return thread, stream


def scheduler(stack: Stack, service: str):
    return stack.servers[service].services[0].scheduler


def test_three_students_answers_stream_at_the_same_time(class_stack):
    """Three students press "Senden" at once: all three answers are streaming at one moment (the last of them to
    start streaming starts before the first of them ends). One at a time, each began after the one before ended."""
    clients = [make_user(class_stack, "student", ("7a",)).browser() for _ in range(3)]
    try:
        started = [chat_in_background(client, f"{LONG_ANSWER} ({n})") for n, client in enumerate(clients)]
        for thread, _ in started:
            thread.join(300)
        streams = [stream for _, stream in started]
        assert [s.ending for s in streams] == ["complete"] * 3, [s.data for s in streams]
        assert all(len(s.updates) >= 2 for s in streams), "each answer streams in pieces"
        assert max(s.first for s in streams) < min(s.last for s in streams), [(s.first, s.last) for s in streams]
    finally:
        for client in clients:
            client.close()


def test_a_users_chats_are_bounded_by_the_same_queue_as_the_api(class_stack):
    """One student's chats in the page wait in the inference service's fair queue under her pseudonym, as her /v1
    requests do: with one running and one waiting, a third request of hers, through the page or /v1, is refused at
    once, while another student's chat is answered. Before, the page's second chat waited in Gradio's line, where
    the fair queue never saw it, and nothing was refused."""
    student, other = make_user(class_stack, "student", ("7a",)), make_user(class_stack, "student", ("7b",))
    queue = scheduler(class_stack, "inference")
    with student.browser() as page, student.browser() as second_page, other.browser() as other_page:
        running, running_stream = chat_in_background(page, LONG_ANSWER)
        wait_until(lambda: running_stream.updates or running_stream.ending, 120, "the first answer streaming")
        waiting, waiting_stream = chat_in_background(second_page, LONG_ANSWER)
        wait_until(lambda: queue.queue_length >= 1 or waiting_stream.ending, 60, "the second chat waiting in the fair queue")
        assert not waiting_stream.ending, waiting_stream.data

        refused = Stream()
        stream_event(page, "chat_send", ["Noch eine Frage", [], "preset_assistant", None, None], answer_has_text, refused)
        assert refused.ending == "error"
        assert "Warteschlange" in json.dumps(refused.data, ensure_ascii=False), refused.data
        api = httpx.post(
            f"{class_stack.url}/v1/chat/completions",
            headers=student.bearer,
            json={"model": "schulki-chat", "messages": [{"role": "user", "content": "Hallo"}], "max_tokens": 4},
            timeout=60,
        )
        assert api.status_code == 429, api.text

        others, others_stream = chat_in_background(other_page, "Sag Hallo.")
        for thread in (running, waiting, others):
            thread.join(300)
        assert running_stream.ending == waiting_stream.ending == others_stream.ending == "complete"


def speech(path: Path, text: str) -> Path:
    subprocess.run(["espeak-ng", "-v", "de", "-s", "140", "-w", str(path), text], check=True, capture_output=True)
    return path


def test_a_short_recording_is_done_while_another_students_long_one_runs(class_stack, tmp_path):
    """A two-second clip is transcribed while another student's long recording is still being transcribed; before,
    the clip waited in Gradio's line until the long one was done."""
    long_user, short_user = make_user(class_stack, "student", ("7a",)), make_user(class_stack, "student", ("7b",))
    queue = scheduler(class_stack, "transcription")
    long_file = speech(tmp_path / "stunde.wav", LONG_SPEECH)
    short_file = speech(tmp_path / "kurz.wav", "Guten Morgen.")
    with long_user.browser() as long_page, short_user.browser() as short_page:
        long_stream, short_stream = Stream(), Stream()
        long_path = upload(long_page, "stunde.wav", long_file.read_bytes())
        long_run = threading.Thread(
            target=stream_event, args=(long_page, "transcribe", [file_payload(long_path), "de"], lambda p: bool(p[0]), long_stream)
        )
        long_run.start()
        wait_until(lambda: queue.running >= 1 or long_stream.ending, 120, "the long recording being transcribed")
        short_path = upload(short_page, "kurz.wav", short_file.read_bytes())
        stream_event(short_page, "transcribe", [file_payload(short_path), "de"], lambda p: bool(p[0]), short_stream)
        long_was_running = long_run.is_alive() and not long_stream.ending
        long_run.join(600)
    assert short_stream.ending == "complete", short_stream.data
    assert long_stream.ending == "complete", long_stream.data
    assert long_was_running, "the short clip was done only after the long recording"


def test_a_users_second_recording_waits_for_her_first(class_stack, tmp_path):
    """One student's two recordings take one turn at a time (transcription.max_running_per_user), so the other turn
    stays free for the class."""
    student = make_user(class_stack, "student", ("7a",))
    queue = scheduler(class_stack, "transcription")
    recording = speech(tmp_path / "stunde.wav", LONG_SPEECH[:600]).read_bytes()
    most_running, done = 0, threading.Event()

    def watch() -> None:
        nonlocal most_running
        while not done.is_set():
            most_running = max(most_running, queue.running)
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    with student.browser() as page, student.browser() as second_page:
        streams, runs = [Stream(), Stream()], []
        for client, stream, name in ((page, streams[0], "erste.wav"), (second_page, streams[1], "zweite.wav")):
            payload = [file_payload(upload(client, name, recording)), "de"]
            runs.append(threading.Thread(target=stream_event, args=(client, "transcribe", payload, lambda p: bool(p[0]), stream)))
        for run in runs:
            run.start()
        for run in runs:
            run.join(600)
    done.set()
    watcher.join()
    assert [s.ending for s in streams] == ["complete", "complete"], [s.data for s in streams]
    assert most_running == 1, "one student held one of the two turns at a time"


@pytest.fixture(scope="module")
def documents_stack(tmp_path_factory) -> Iterator[Stack]:
    """Embeddings and retrieval with two processing slots, as on a machine whose retrieval has two cores."""
    folder = tmp_path_factory.mktemp("documents")
    config = stack_config(folder)
    config.retrieval.max_concurrent_ingests = 2
    config.gateway.requests_per_minute = {"student": 10_000, "teacher": 10_000, "admin": 10_000}
    with running_stack(folder, services=("embeddings", "retrieval"), config=config) as running:
        yield running


def big_table(rows: int) -> bytes:
    header = "Name;Klasse;Fach;Note;Bemerkung\n"
    lines = [
        f"Schüler {n};7a;Biologie;{n % 6 + 1};Hat im Unterricht über Photosynthese und Zellatmung gesprochen, Nummer {n}."
        for n in range(rows)
    ]
    return (header + "\n".join(lines)).encode()


def upload_in_background(client: httpx.Client, workspace: str, path: str, stream: Stream) -> threading.Thread:
    def call() -> None:
        with contextlib.suppress(httpx.HTTPError):  # the stack may close while a big table is still being processed
            stream_event(client, "documents_upload", [workspace, file_payload(path)], lambda p: False, stream)

    thread = threading.Thread(target=call, daemon=True)
    thread.start()
    return thread


def test_a_teachers_small_upload_does_not_wait_behind_a_students_big_tables(documents_stack):
    """A student's two big tables take one processing slot (retrieval.ingests_per_user of two slots), so a teacher's
    small file is processed while both tables are still in the works. Before, the tables took both slots and the
    teacher's file waited until one of them was done."""
    student, teacher = make_user(documents_stack, "student", ("7a",)), make_user(documents_stack, "teacher", ("7a",))
    incoming = documents_stack.config.retrieval.store_path / "incoming"
    with student.browser() as first_page, student.browser() as second_page, teacher.browser() as teacher_page:
        tables = [Stream(), Stream()]
        for client, stream, name in ((first_page, tables[0], "noten-a.csv"), (second_page, tables[1], "noten-b.csv")):
            upload_in_background(client, f"u-{student.account.id}", upload(client, name, big_table(800)), stream)
        # both tables are received (they lie in the service's incoming folder until they are done)
        wait_until(lambda: len(list(incoming.iterdir())) >= 2 if incoming.exists() else False, 120, "both tables received")
        note = Stream()
        stream_event(
            teacher_page,
            "documents_upload",
            [f"u-{teacher.account.id}", file_payload(upload(teacher_page, "notiz.txt", b"Morgen Wandertag."))],
            lambda p: False,
            note,
        )
        still_running = [table.ending for table in tables]
    assert note.ending == "complete", note.data
    assert "notiz.txt" in json.dumps(note.data, ensure_ascii=False), note.data
    assert still_running == ["", ""], "the teacher's note waited until one of the student's tables was done"
