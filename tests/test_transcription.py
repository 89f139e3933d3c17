"""The transcription service with the real Whisper base model, over a real socket.

Speech comes from espeak-ng, silence from sox, the other formats and the
videos from ffmpeg; all are made fresh in a temporary folder.
"""

from __future__ import annotations

import itertools
import logging
import random
import re
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest
from schulki.cli import available_services
from schulki.config import Config, TranscriptionConfig
from schulki.transcription import build
from schulki.transcription.audio import probe
from schulki.transcription.engine import resolve_device
from schulki.transcription.export import to_srt, to_vtt
from schulki.transcription.v1 import transcription_service_pb2 as pb
from schulki.transcription.v1 import transcription_service_pb2_grpc as pb_grpc

from tests.conftest import InProcessServer, ServiceProcess
from tests.service_support import service_fixtures, wait_until

SERVICE = "schulki.transcription.v1.TranscriptionService"
LESSON = (
    "Guten Morgen, liebe Klasse. Heute ist Montag, und wir lernen Mathematik. "
    "Zuerst rechnen wir zusammen ein paar Aufgaben an der Tafel. "
    "Danach lesen wir eine Geschichte über einen kleinen Hund, der im Wald wohnt. "
    "Die Hausaufgaben stehen im Heft. Vielen Dank und auf Wiedersehen."
)
LESSON_START = {"guten", "morgen", "liebe", "klasse", "heute", "montag", "mathematik"}
LESSON_END = {"hausaufgaben", "stehen", "heft", "vielen", "dank", "wiedersehen"}
GREETING = "Guten Morgen, liebe Klasse. Heute ist Montag."
GREETING_WORDS = {"guten", "morgen", "liebe", "klasse", "heute", "montag"}
GREETING_IN_ENGLISH = {"good", "morning", "dear", "class", "today", "is", "monday"}
ENGLISH = "Good morning. Today we talk about the weather."
ENGLISH_WORDS = {"good", "morning", "today", "we", "talk", "about", "weather"}
WINDOW_S = 10.0
"""Small windows, so that the 20 s lesson is transcribed in several."""


def words(text: str) -> set[str]:
    return set(re.findall(r"\w+", text.lower()))


def run(*command: str) -> None:
    if shutil.which(command[0]) is None:
        pytest.fail(f"{command[0]} is missing: ./dev test installs it")
    subprocess.run(command, check=True, capture_output=True)


def ffmpeg(*args: str) -> None:
    run("ffmpeg", "-nostdin", "-loglevel", "error", "-y", *args)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("recordings")
    p = {
        name: folder / name
        for name in (
            "lesson.wav",
            "greeting.wav",
            "english.wav",
            "silence.wav",
            "long.wav",
            "no-audio.mp4",
            "truncated.m4a",
        )
    }
    run("espeak-ng", "-v", "de", "-w", str(p["lesson.wav"]), LESSON)
    run("espeak-ng", "-v", "de", "-w", str(p["greeting.wav"]), GREETING)
    run("espeak-ng", "-v", "en", "-w", str(p["english.wav"]), ENGLISH)
    run("sox", "-n", "-r", "16000", "-c", "1", str(p["silence.wav"]), "trim", "0", "6")
    run("sox", *[str(p["lesson.wav"])] * 6, str(p["long.wav"]))
    greeting = str(p["greeting.wav"])
    for name, codec in (("mp3", "libmp3lame"), ("m4a", "aac"), ("ogg", "libvorbis"), ("flac", "flac"), ("webm", "libopus")):
        p[f"greeting.{name}"] = folder / f"greeting.{name}"
        ffmpeg("-i", greeting, "-c:a", codec, str(p[f"greeting.{name}"]))
    p["greeting.mp4"] = folder / "greeting.mp4"
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "testsrc=size=160x120:rate=10",
        "-i",
        greeting,
        "-shortest",
        "-c:v",
        "libx264",
        "-c:a",
        "aac",
        str(p["greeting.mp4"]),
    )
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120:rate=10", "-t", "3", "-c:v", "libx264", str(p["no-audio.mp4"]))
    whole = p["greeting.m4a"].read_bytes()
    p["truncated.m4a"].write_bytes(whole[: len(whole) // 3])  # an interrupted upload: the index at the end is missing
    return p


def make_service():
    config = Config()
    config.transcription.threads = 2
    config.transcription.window_s = WINDOW_S
    return build(config)


server, channel, stub = service_fixtures(make_service, pb_grpc.TranscriptionServiceStub)


@dataclass
class Result:
    language: pb.LanguageInfo | None = None
    segments: list[pb.Segment] = field(default_factory=list)
    summary: pb.TranscriptionSummary | None = None

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.segments)


def requests(data: bytes, chunk: int = 64 * 1024, options: pb.TranscribeOptions | None = None):
    if options is not None:
        yield pb.TranscribeRequest(options=options)
    for at in range(0, len(data), chunk):
        yield pb.TranscribeRequest(audio_chunk=data[at : at + chunk])


def transcribe(stub, source: Path | bytes, **options) -> Result:
    """One call; checks the response order: the language, then segments, then one summary."""
    data = source.read_bytes() if isinstance(source, Path) else source
    name = source.name if isinstance(source, Path) else ""
    result = Result()
    for response in stub.Transcribe(requests(data, options=pb.TranscribeOptions(file_name=name, **options)), timeout=300):
        kind = response.WhichOneof("event")
        assert result.summary is None, "a message came after the summary"
        if kind == "language":
            assert result.language is None and not result.segments, "the language must come once, first"
            result.language = response.language
        elif kind == "segment":
            assert result.language is not None, "a segment came before the language"
            result.segments.append(response.segment)
        else:
            result.summary = response.summary
    assert result.language is not None and result.summary is not None
    assert result.summary.segment_count == len(result.segments)
    assert [s.index for s in result.segments] == list(range(len(result.segments)))
    return result


def assert_error(stub, code: grpc.StatusCode, message: str, source, **options) -> str:
    with pytest.raises(grpc.RpcError) as caught:
        transcribe(stub, source, **options)
    assert caught.value.code() == code, caught.value.details()
    assert message in caught.value.details()
    return caught.value.details()


def test_german_speech_is_transcribed_in_several_windows(stub, recordings):
    result = transcribe(stub, recordings["lesson.wav"])
    assert result.language.language == "de"
    assert result.language.probability > 0.5
    found = words(result.text)
    assert len(found & LESSON_START) >= 5, result.text
    assert len(found & LESSON_END) >= 4, result.text
    duration = result.summary.duration
    assert duration > WINDOW_S + 5  # the recording really spans several windows
    assert result.segments[-1].end > WINDOW_S  # and later windows carry their time offset
    for before, after in itertools.pairwise(result.segments):
        assert before.start <= after.start
    for segment in result.segments:
        assert 0 <= segment.start < segment.end <= duration + 0.5
    assert 0 < result.summary.speech_duration <= duration
    assert result.summary.empty_reason == ""


@pytest.mark.parametrize("name", ["greeting.mp3", "greeting.m4a", "greeting.ogg", "greeting.flac", "greeting.webm", "greeting.mp4"])
def test_every_format_is_understood(stub, recordings, name):
    result = transcribe(stub, recordings[name])
    assert result.language.language == "de"
    assert len(words(result.text) & GREETING_WORDS) >= 3, result.text


SHORT_GERMAN = "Der Wasserkreislauf ist spannend."
SHORT_ENGLISH = "The homework is finished."


def test_a_two_second_german_clip_is_german_with_default_settings(stub, tmp_path):
    """Whisper base alone calls this clip Polish; the school's default language wins when detection is unsure."""
    from faster_whisper import WhisperModel
    from faster_whisper.audio import decode_audio
    from schulki.models.defaults import speech_model_path

    german, english = tmp_path / "kurz.wav", tmp_path / "short.wav"
    run("espeak-ng", "-v", "de", "-s", "140", "-w", str(german), SHORT_GERMAN)
    run("espeak-ng", "-v", "en", "-s", "140", "-w", str(english), SHORT_ENGLISH)
    samples = decode_audio(str(german))
    assert 1.5 < samples.size / 16000 < 2.6
    whisper_alone, _, _ = WhisperModel(str(speech_model_path()), device="cpu", compute_type="int8").detect_language(samples)
    assert whisper_alone != "de"  # otherwise this clip proves nothing
    assert transcribe(stub, german).language.language == "de"
    assert transcribe(stub, english).language.language == "en"  # a sure detection of another language is kept


def test_english_speech_with_an_initial_prompt(stub, recordings):
    result = transcribe(stub, recordings["english.wav"], initial_prompt="weather, morning")
    assert result.language.language == "en"
    assert len(words(result.text) & ENGLISH_WORDS) >= 5, result.text


def test_translate_writes_german_speech_in_english(stub, recordings):
    result = transcribe(stub, recordings["greeting.wav"], task=pb.TASK_TRANSLATE)
    assert result.language.language == "de"
    found = words(result.text)
    assert len(found & GREETING_IN_ENGLISH) >= 3, result.text
    assert not found & {"guten", "morgen", "heute"}, result.text


def test_named_language_and_word_timestamps(stub, recordings):
    result = transcribe(stub, recordings["greeting.wav"], language="de-DE", word_timestamps=True)
    assert result.language.language == "de" and result.language.probability == 1.0
    assert len(words(result.text) & GREETING_WORDS) >= 4, result.text
    for segment in result.segments:
        assert segment.words
        assert words("".join(w.text for w in segment.words)) == words(segment.text)
        for word in segment.words:
            assert segment.start - 0.01 <= word.start <= word.end <= segment.end + 0.01
            assert 0 <= word.probability <= 1


@pytest.mark.parametrize("disable_vad", [False, True])
def test_silence_gives_no_text_and_says_why(stub, recordings, disable_vad):
    result = transcribe(stub, recordings["silence.wav"], disable_vad=disable_vad)
    assert result.segments == []
    assert result.summary.duration == pytest.approx(6.0, abs=0.05)
    assert result.summary.speech_duration == 0
    assert "Keine Sprache" in result.summary.empty_reason and "No speech" in result.summary.empty_reason
    assert result.language.language == ""


def test_transcript_exports_from_the_service_segments(stub, recordings):
    result = transcribe(stub, recordings["greeting.wav"])
    srt = to_srt(result.segments)
    assert re.match(r"1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n\S", srt), srt
    assert to_vtt(result.segments).startswith("WEBVTT\n\n00:00:")


def random_bytes(n: int) -> bytes:
    return random.Random(4).randbytes(n)


BAD_INPUTS = {
    "empty upload": (lambda r: b"", grpc.StatusCode.INVALID_ARGUMENT, "leer"),
    "garbage bytes": (lambda r: random_bytes(50_000), grpc.StatusCode.INVALID_ARGUMENT, "keine Audio"),
    "a text file": (lambda r: ("Das ist keine Aufnahme. " * 500).encode(), grpc.StatusCode.INVALID_ARGUMENT, "keine Audio"),
    "a video without sound": (lambda r: r["no-audio.mp4"], grpc.StatusCode.INVALID_ARGUMENT, "keine Tonspur"),
    "a truncated file": (lambda r: r["truncated.m4a"], grpc.StatusCode.INVALID_ARGUMENT, "beschädigt oder unvollständig"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_refused_clearly_and_the_service_keeps_working(stub, recordings, case):
    make, code, message = BAD_INPUTS[case]
    source = make(recordings)
    details = assert_error(stub, code, message, source)
    assert re.search(r"\(.+\)", details), "an English explanation in brackets"


def test_options_must_make_sense(stub, recordings):
    audio = recordings["greeting.wav"]
    assert_error(stub, grpc.StatusCode.INVALID_ARGUMENT, "Sprache", audio, language="klingonisch")
    assert_error(stub, grpc.StatusCode.INVALID_ARGUMENT, "Stichwörter", audio, initial_prompt="Wort " * 300)
    assert_error(stub, grpc.StatusCode.INVALID_ARGUMENT, "Aufgabe", audio, task=7)
    twice = [
        pb.TranscribeRequest(options=pb.TranscribeOptions()),
        pb.TranscribeRequest(audio_chunk=b"RIFF"),
        pb.TranscribeRequest(options=pb.TranscribeOptions()),
    ]
    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Transcribe(iter(twice), timeout=60))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "genau einmal" in caught.value.details()
    assert transcribe(stub, audio).segments  # every refusal above left the service working


def test_audio_without_options_uses_the_defaults(stub, recordings):
    responses = list(stub.Transcribe(requests(recordings["greeting.flac"].read_bytes()), timeout=300))
    assert responses[0].language.language == "de"
    assert responses[-1].summary.segment_count >= 1


def test_over_the_size_limit_fails_while_uploading(stub, recordings, server, monkeypatch):
    monkeypatch.setattr(server.service.config, "max_upload_bytes", 100_000)
    sent = []

    def counted():
        for request in requests(recordings["long.wav"].read_bytes(), chunk=50_000, options=pb.TranscribeOptions(file_name="long.wav")):
            sent.append(request)
            yield request

    with pytest.raises(grpc.RpcError) as caught:
        list(stub.Transcribe(counted(), timeout=60))
    assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "zu groß" in caught.value.details() and "0.10 MB" in caught.value.details()
    size = recordings["long.wav"].stat().st_size
    assert len(sent) < size // 50_000, "the upload was refused before all of it was sent"


def test_over_the_duration_limit_is_refused(stub, recordings, server, monkeypatch):
    monkeypatch.setattr(server.service.config, "max_duration_s", 60.0)
    details = assert_error(stub, grpc.StatusCode.RESOURCE_EXHAUSTED, "zu lang", recordings["long.wav"])
    assert "höchstens 1 Minuten" in details


class _Lines(logging.Handler):
    """The messages of a logger, as the service writes them."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def test_a_cancelled_call_stops_the_work_promptly(stub, recordings, server):
    """The engine's own log line says how much audio it decoded before it noticed the cancel."""
    logger = logging.getLogger("schulki.transcription")
    lines, level = _Lines(), logger.level
    logger.addHandler(lines)
    logger.setLevel(logging.INFO)
    try:
        options = pb.TranscribeOptions(file_name="long.wav")
        call = stub.Transcribe(requests(recordings["long.wav"].read_bytes(), options=options), timeout=300)
        for response in call:
            if response.WhichOneof("event") == "segment":
                break
        call.cancel()
        ended = lambda: [m for m in lines.messages if m.startswith("transcribed ")]  # noqa: E731
        wait_until(ended, timeout=120, what="the end of the transcription after the cancel")
    finally:
        logger.removeHandler(lines)
        logger.setLevel(level)
    assert ended()[-1].endswith("(cancelled)"), ended()
    decoded = float(re.match(r"transcribed ([\d.]+) s of audio", ended()[-1]).group(1))
    total = probe(recordings["long.wav"], 3600).duration
    assert decoded < total / 2, f"decoded {decoded:.0f} of {total:.0f} s after the cancel"
    wait_until(lambda: server.service.scheduler.running == 0, timeout=10, what="the freed turn")


def test_two_transcriptions_at_once_both_finish(server, recordings, monkeypatch):
    """Three users' calls, two allowed at once: two really decode at the same time (their work overlaps), never three.
    (Calls that name no user count as one caller: gRPC shares one connection per target, so they have one peer.)"""
    results, errors = [], []
    engine = server.service.engine
    allowed = server.service.config.max_concurrent
    assert allowed == 2, "this test expects the default of two transcriptions at once"
    work = engine._transcribe_blocking
    intervals: list[tuple[float, float]] = []

    def timed(*args, **kwargs):  # the engine's own work, with its start and end noted on its worker thread
        started = time.monotonic()
        try:
            return work(*args, **kwargs)
        finally:
            intervals.append((started, time.monotonic()))

    monkeypatch.setattr(engine, "_transcribe_blocking", timed)

    def one(user: str):
        with server.channel() as channel:
            try:
                results.append(transcribe(pb_grpc.TranscriptionServiceStub(channel), recordings["greeting.flac"], user=user))
            except Exception as error:
                errors.append(error)

    threads = [threading.Thread(target=one, args=(f"student-{n}",)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert not errors, errors
    assert len(results) == 3 and all(len(words(r.text) & GREETING_WORDS) >= 3 for r in results)
    assert len(intervals) == 3
    # The most intervals covering one moment (one after another would give 1).
    at_once = max(sum(1 for start, end in intervals if start <= moment < end) for moment, _ in intervals)
    assert at_once == allowed, f"at most {at_once} transcriptions decoded at the same time; {allowed} are allowed: {intervals}"


def test_cpu_runs_int8_and_settings_can_override():
    assert resolve_device(TranscriptionConfig(device="cpu")) == ("cpu", "int8")
    assert resolve_device(TranscriptionConfig(device="cpu", compute_type="float32")) == ("cpu", "float32")


def cuda_devices() -> int:
    import ctranslate2

    return ctranslate2.get_cuda_device_count()


@pytest.mark.skipif(cuda_devices() == 0, reason="needs a CUDA GPU that CTranslate2 can use")
def test_on_a_gpu_auto_picks_cuda_and_float16(recordings):
    config = Config()
    assert resolve_device(config.transcription) == ("cuda", "float16")
    service = build(config)
    with InProcessServer([service]) as running, running.channel() as channel:
        assert service.engine.device == "cuda" and service.engine.compute_type == "float16"
        result = transcribe(pb_grpc.TranscriptionServiceStub(channel), recordings["lesson.wav"])
    assert result.language.language == "de"
    assert len(words(result.text) & LESSON_START) >= 5, result.text


def test_schulki_serve_transcription_runs_and_stops_on_sigterm(recordings):
    assert "transcription" in available_services()  # so `schulki up` starts it
    process = ServiceProcess("transcription", env={"SCHULKI_TRANSCRIPTION__THREADS": "1"}).start()
    try:
        with grpc.insecure_channel(process.address) as channel:
            result = transcribe(pb_grpc.TranscriptionServiceStub(channel), recordings["greeting.webm"])
        assert len(words(result.text) & GREETING_WORDS) >= 4, result.text
    finally:
        code, log = process.stop()
    assert code == 0, log
    assert "Guten" not in log and "Morgen" not in log  # no transcript text in the logs
