"""Four students' recordings at once: every one comes back with its text, from its start to its end.

The recordings are the transcription benchmark's (a minute of espeak-ng German each, random school sentences, as
mp3): hard speech for Whisper base, on which it loops at temperature 0 and falls back to sampling. Before schulki
turned off Whisper's own silence check behind voice activity detection, a 30 s stretch whose fallback ended with a
no-speech probability over 0.6 was dropped as silence, and one of four such recordings came back with no segments
and no error. Which stretch is lost is up to the fallback's random draws: on the old code the engine alone lost one
or both halves of seed 12's minute in two of three runs, and this test passed there in the one run it got (so it
guards the case, without failing every time the check comes back). Real Whisper base, real gRPC, the default
service (batched, as on every machine now; the loss came with and without batches).
"""

from __future__ import annotations

import re
import threading
from pathlib import Path

import grpc
import pytest
from schulki.config import Config
from schulki.transcription import build
from schulki.transcription.v1 import transcription_service_pb2 as pb
from schulki.transcription.v1 import transcription_service_pb2_grpc as pb_grpc

from benchmarks.transcription_bench import make_recording
from tests.conftest import InProcessServer
from tests.test_transcription import requests, run

SEEDS = (10, 11, 12, 13)
"""The benchmark's four recordings at once; 12 is the one that came back empty there."""
MINUTES = 1.0


@pytest.fixture(scope="module")
def students(tmp_path_factory) -> dict[str, tuple[Path, set[str]]]:
    """Each student's recording and the words spoken in it."""
    run("espeak-ng", "--version")  # a clear failure when it is missing
    folder = tmp_path_factory.mktemp("at-once")
    made = {}
    for seed in SEEDS:
        # made as when the loss was seen: hard speech, on which Whisper base falls back to sampling
        path, _, text = make_recording(folder, MINUTES, f"student-{seed}", seed, hard_for_whisper=True)
        made[f"student-{seed}"] = (path, set(re.findall(r"\w+", text.lower())))
    return made


def transcribe_all(server: InProcessServer, students: dict[str, tuple[Path, set[str]]]) -> tuple[dict, dict]:
    """Every student's recording sent at the same time; each one's segments and summary, and any errors."""
    results: dict[str, tuple[list[pb.Segment], pb.TranscriptionSummary | None]] = {}
    errors: dict[str, grpc.RpcError] = {}
    start = threading.Barrier(len(students))

    def one(user: str, path: Path) -> None:
        options = pb.TranscribeOptions(file_name=path.name, user=user)
        segments, summary = [], None
        with server.channel() as channel:
            start.wait()
            try:
                for response in pb_grpc.TranscriptionServiceStub(channel).Transcribe(requests(path.read_bytes(), options=options)):
                    if response.WhichOneof("event") == "segment":
                        segments.append(response.segment)
                    elif response.WhichOneof("event") == "summary":
                        summary = response.summary
            except grpc.RpcError as error:
                errors[user] = error
        results[user] = (segments, summary)

    calls = [threading.Thread(target=one, args=(user, path)) for user, (path, _) in students.items()]
    for call in calls:
        call.start()
    for call in calls:
        call.join()
    return results, errors


def test_four_recordings_at_once_each_get_their_whole_text(students):
    config = Config()
    config.transcription.threads = 2
    config.transcription.max_concurrent = len(SEEDS)  # all four run at once, as in the benchmark
    service = build(config)
    with InProcessServer([service]) as server:
        results, errors = transcribe_all(server, students)
    assert not errors, {user: error.details() for user, error in errors.items()}
    for user, (_, spoken) in students.items():
        segments, summary = results[user]
        assert summary is not None and summary.segment_count == len(segments), user
        assert segments, f"{user} got no text: {summary.empty_reason!r}"
        heard = set(re.findall(r"\w+", " ".join(s.text for s in segments).lower()))
        assert len(heard & spoken) >= 10, f"{user}: {sorted(heard & spoken)}"
        # Neither half of the minute was dropped: text from its first seconds and from its last.
        assert segments[0].start < 20.0 and segments[-1].end > 40.0, f"{user}: speech from {segments[0].start} to {segments[-1].end} s"
