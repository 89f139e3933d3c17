"""Transcription speed and memory: the gRPC service beside faster-whisper called directly.

1. Overhead: the same recording (German speech from espeak-ng, as mp3) is
   transcribed through ``schulki serve transcription`` (upload, probe, decode
   in windows, VAD, Whisper, streaming) and by faster-whisper's own
   ``WhisperModel.transcribe`` with the same model, device, compute type,
   threads, beam size and VAD, alternating, several times. Prints the
   real-time factor (seconds of work per second of audio) of each, medians,
   and their ratio.
2. A long recording (10 minutes by default) through a freshly started service:
   real-time factor and the service process's peak memory (VmHWM), beside its
   memory right after loading the model; optionally (--direct-long) the peak
   memory of faster-whisper transcribing the same file directly.
3. For an hour-long recording, the peak memory of the stages that grow with
   the recording's length (decoding, VAD, features; not the Whisper decoder,
   whose memory does not): in schulki's windows, and for the whole file at
   once as faster-whisper does it.
4. Several recordings at once, batched and not: 1, 2 and 4 different
   recordings sent together to a service with batching = false and to one with
   batching = true (both up side by side, taking turns, several rounds):
   throughput in seconds of audio per second of wall time, and the ratio.
5. The memory of a batch: chunks of 30 s of speech decoded in batches of
   1, 4 and 8 (each in a fresh process), peak memory above the loaded model;
   the figure per chunk is what the plan counts (BATCH_CHUNK_FACTOR).

    .venv/bin/python benchmarks/transcription_bench.py
    .venv/bin/python benchmarks/transcription_bench.py --minutes 1 --repeats 2 --long-minutes 3
    .venv/bin/python benchmarks/transcription_bench.py --smoke    # recordings of seconds: does it still run?

The machine may be shared: the load average is printed before and after.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import itertools
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import grpc

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from schulki.config import Config  # noqa: E402
from schulki.models.defaults import speech_model_path  # noqa: E402
from schulki.transcription.v1 import transcription_service_pb2 as pb  # noqa: E402
from schulki.transcription.v1 import transcription_service_pb2_grpc as pb_grpc  # noqa: E402

from benchmarks.smoke import parse_args  # noqa: E402
from tests.conftest import ServiceProcess  # noqa: E402

NAMES = [
    "Anna",
    "Ben",
    "Clara",
    "David",
    "Emil",
    "Fatma",
    "Greta",
    "Hannes",
    "Ida",
    "Jonas",
    "Lea",
    "Mehmet",
    "Nora",
    "Oskar",
    "Paula",
    "Sami",
]
ACTIONS = [
    "liest ein Buch über",
    "schreibt einen Aufsatz über",
    "hält ein Referat über",
    "malt ein Bild über",
    "baut ein Modell über",
    "sucht im Internet nach Fakten über",
    "erklärt der Klasse alles über",
    "fragt die Lehrerin etwas über",
]
TOPICS = [
    "die Römer",
    "den Wasserkreislauf",
    "die Vulkane in Italien",
    "das Sonnensystem",
    "die Französische Revolution",
    "den Regenwald",
    "die Bienen im Schulgarten",
    "das Mittelalter",
    "die Brüche in Mathematik",
    "den Klimawandel",
    "die Nordsee",
    "die Dinosaurier",
]
TIMES = ["am Montag", "nach der Pause", "in der dritten Stunde", "vor den Ferien", "am Nachmittag", "heute früh", "morgen", "am Freitag"]
ENDINGS = [
    "weil das spannend ist.",
    "zusammen mit zwei Freunden.",
    "und braucht dafür noch Hilfe.",
    "obwohl es draußen regnet.",
    "für die nächste Klassenarbeit.",
    "und ist fast fertig damit.",
    "mit vielen Bildern und Zahlen.",
    "ganz allein.",
]
CHUNK = 1024 * 1024


def run(*command: str) -> None:
    subprocess.run(command, check=True, capture_output=True)


def lesson_sentences(seed: int) -> Iterator[str]:
    """Varied German sentences without end, the same ones for the same seed.

    Whisper falls back to sampling (slow, and random in its timing) when a
    stretch of text repeats, so the benchmark's speech must not repeat.
    """
    rng = random.Random(seed)
    pick = lambda items: items[rng.randrange(len(items))]  # noqa: E731
    while True:
        yield f"{pick(NAMES)} {pick(ACTIONS)} {pick(TOPICS)} {pick(TIMES)}, {pick(ENDINGS)}"


def lesson_text(seconds: float, seed: int) -> str:
    """Enough of the seed's sentences for at least ``seconds`` of speech (espeak-ng speaks one in about 5 s)."""
    return " ".join(itertools.islice(lesson_sentences(seed), int(seconds / 4) + 1))


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word-level Levenshtein distance over the reference's length, on lower-case words without punctuation."""
    ref, hyp = re.findall(r"\w+", reference.lower()), re.findall(r"\w+", hypothesis.lower())
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        previous, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (r != h))
    return row[-1] / len(ref)


class Recording(NamedTuple):
    path: Path
    seconds: float
    """Its exact length."""
    text: str
    """The words spoken."""


def make_recording(folder: Path, minutes: float, name: str, seed: int, *, hard_for_whisper: bool = False) -> Recording:
    """German speech of about ``minutes`` as mp3 (64 kbit/s).

    The recording ends where a sentence ends, at ``minutes`` or up to one sentence after, as a student's does, and
    keeps espeak-ng's own sample rate: Whisper base decodes espeak-ng German close to the limit of its fallback
    checks, and resampled to 16 kHz before the mp3, clips of 10 s went through the whole fallback ladder
    (temperature 1.0: 8.5 s of work instead of 1.1 s on 2 cores) in 3 of 8 cases, at 22.05 kHz in none.

    ``hard_for_whisper`` makes them as earlier measurements did: cut at exactly ``minutes``, in the middle of a word,
    and resampled to 16 kHz; speech on which Whisper base often falls back to sampling.
    """
    wav, mp3 = folder / f"{name}.wav", folder / f"{name}.mp3"
    if hard_for_whisper:
        text = lesson_text(minutes * 60, seed)
        run("espeak-ng", "-v", "de", "-w", str(wav), text)
    else:
        spoken, sentence, said = 0.0, folder / f"{name}.sentence.wav", []
        with wave.open(str(wav), "wb") as out:
            for one in lesson_sentences(seed):
                run("espeak-ng", "-v", "de", "-w", str(sentence), one)
                said.append(one)
                with wave.open(str(sentence), "rb") as part:
                    if len(said) == 1:
                        out.setparams(part.getparams())
                    out.writeframes(part.readframes(part.getnframes()))
                    spoken += part.getnframes() / part.getframerate()
                if spoken >= minutes * 60:
                    break
        sentence.unlink()
        text = " ".join(said)
    run(
        "ffmpeg",
        "-nostdin",
        "-loglevel",
        "error",
        "-y",
        "-i",
        str(wav),
        *(["-t", str(minutes * 60), "-ar", "16000"] if hard_for_whisper else []),
        "-ac",
        "1",
        "-b:a",
        "64k",
        str(mp3),
    )
    wav.unlink()
    import av

    with av.open(str(mp3)) as container:
        if container.duration is None:
            raise RuntimeError(f"ffmpeg wrote {mp3.name} without a duration")
        duration = container.duration / 1_000_000
    return Recording(mp3, duration, text)


def peak_rss_mb(pid: int) -> tuple[float, float]:
    """Current and peak resident memory of a process, in MiB."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            values[key] = int(rest.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


class Service:
    """``schulki serve transcription`` in a child process."""

    def __init__(self, threads: int, beam_size: int, **settings: object) -> None:
        env = {
            "SCHULKI_TRANSCRIPTION__THREADS": str(threads),
            "SCHULKI_TRANSCRIPTION__BEAM_SIZE": str(beam_size),
            "SCHULKI_TRANSCRIPTION__DEVICE": "cpu",
            "SCHULKI_RUNTIME__LOG_LEVEL": "WARNING",
        } | {f"SCHULKI_TRANSCRIPTION__{name.upper()}": str(value).lower() for name, value in settings.items()}
        self.process = ServiceProcess("transcription", env=env).start(timeout=300)
        self.channel = grpc.insecure_channel(self.process.address)
        self.stub = pb_grpc.TranscriptionServiceStub(self.channel)

    @property
    def pid(self) -> int:
        """The service's process id, for its memory figures."""
        if self.process.process is None:
            raise RuntimeError("the transcription service was not started")
        return self.process.process.pid

    def transcribe(self, path: Path, user: str = "", language: str = "") -> tuple[float, list[str]]:
        """Seconds until the whole result came, and the text of each segment."""

        def requests() -> Iterator[pb.TranscribeRequest]:
            yield pb.TranscribeRequest(options=pb.TranscribeOptions(file_name=path.name, user=user, language=language))
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    yield pb.TranscribeRequest(audio_chunk=chunk)

        started = time.perf_counter()
        segments = [r.segment.text for r in self.stub.Transcribe(requests(), timeout=7200) if r.WhichOneof("event") == "segment"]
        return time.perf_counter() - started, segments

    def close(self) -> None:
        self.channel.close()
        self.process.stop()


GROWING_SCRIPT = """
import sys, numpy as np
from pathlib import Path
from faster_whisper.audio import decode_audio
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps
from schulki.transcription import audio
path, mode, window_s = Path(sys.argv[1]), sys.argv[2], float(sys.argv[3])
extract = FeatureExtractor()
def stages(samples):
    speech = get_speech_timestamps(samples, VadOptions())
    kept = np.concatenate(collect_chunks(samples, speech)[0])
    return extract(kept).shape[-1]
if mode == "windows":
    frames = sum(stages(window) for _, window in audio.windows(path, window_s, 1e9))
else:
    frames = stages(decode_audio(str(path)))
print([int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0] / 1024, frames)
"""


LANGUAGE = "de"
"""Given in parts 1 and 4, as a German class's teacher sets it: they compare decoding, and Whisper base heard clips of
10 s of espeak-ng German as Finnish or Latin (and the service, which weighs the school's language, and faster-whisper
alone can hear one clip differently) and then decoded them through its whole fallback ladder."""

DIRECT_SCRIPT = """
import sys, time
from faster_whisper import WhisperModel
path, model_dir, threads, beam = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads, local_files_only=True)
started = time.perf_counter()
segments, info = model.transcribe(path, beam_size=beam, vad_filter=True)
count = sum(1 for _ in segments)
elapsed = time.perf_counter() - started
hwm = [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")][0] / 1024
print(elapsed, count, hwm)
"""


def overhead(folder: Path, args: argparse.Namespace, model_dir: Path) -> None:
    """Part 1: the same recording through the service and through faster-whisper directly, alternating."""
    from faster_whisper import WhisperModel

    short, short_s, _ = make_recording(folder, args.minutes, "short", seed=1)
    print(f"\n1. overhead: {short_s:.0f} s of German speech (mp3), language given ({LANGUAGE}), {args.repeats} runs each, alternating")
    model = WhisperModel(str(model_dir), device="cpu", compute_type="int8", cpu_threads=args.threads, local_files_only=True)
    service = Service(args.threads, args.beam_size, batching=False)  # the same work as WhisperModel.transcribe
    direct_times, service_times = [], []
    try:
        for i in range(args.repeats):
            started = time.perf_counter()
            segments, _ = model.transcribe(str(short), language=LANGUAGE, beam_size=args.beam_size, vad_filter=True)
            segments = list(segments)
            direct_n = len(segments)
            fallbacks = sum(1 for segment in segments if segment.temperature > 0)
            direct_times.append(time.perf_counter() - started)
            elapsed, service_segments = service.transcribe(short, language=LANGUAGE)
            service_times.append(elapsed)
            print(
                f"   run {i + 1}: direct RTF {direct_times[-1] / short_s:.3f} ({direct_n} segments), "
                f"service RTF {elapsed / short_s:.3f} ({len(service_segments)} segments)"
                + (f"; {fallbacks} direct segments needed sampling fallback" if fallbacks else "")
            )
    finally:
        service.close()
    del model
    direct, through = statistics.median(direct_times), statistics.median(service_times)
    print(
        f"   median RTF: direct {direct / short_s:.3f}, service {through / short_s:.3f}; "
        f"service/direct = {through / direct:.3f} ({(through / direct - 1) * 100:+.1f} %)"
    )


def at_once(service: Service, recordings: list[Path]) -> tuple[float, list[list[str]]]:
    """Wall seconds until all recordings, sent together by different students, are transcribed, and their segments."""
    started = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(len(recordings)) as pool:
        segments = [
            texts for _, texts in pool.map(lambda n: service.transcribe(recordings[n], f"student-{n}", LANGUAGE), range(len(recordings)))
        ]
    return time.perf_counter() - started, segments


def concurrent_recordings(folder: Path, args: argparse.Namespace) -> None:
    """Part 4: 1, 2 and 4 recordings at once, through an unbatched and a batched service up side by side."""
    levels = args.at_once
    recordings = [make_recording(folder, args.batch_minutes, f"student-{n}", seed=10 + n) for n in range(max(levels))]
    print(
        f"\n4. several recordings at once: {len(recordings)} different recordings of {args.batch_minutes:g} min, "
        f"language given ({LANGUAGE}), batch size {args.batch_size}, {max(levels)} transcriptions allowed at once, "
        f"{args.rounds} rounds (load {os.getloadavg()[0]:.2f})"
    )
    services = {
        "unbatched": Service(args.threads, args.beam_size, batching=False, max_concurrent=max(levels), max_running_per_user=1),
        "batched": Service(
            args.threads, args.beam_size, batching=True, batch_size=args.batch_size, max_concurrent=max(levels), max_running_per_user=1
        ),
    }
    walls: dict[tuple[str, int], list[float]] = {}
    errors: dict[str, list[float]] = {name: [] for name in services}
    """The word error rate of each recording transcribed, against the words spoken."""
    try:
        for service in services.values():  # the first call of each warms it up
            service.transcribe(recordings[0].path, language=LANGUAGE)
        for _ in range(args.rounds):
            for level in levels:
                for name, service in services.items():
                    wall, segments = at_once(service, [recording.path for recording in recordings[:level]])
                    walls.setdefault((name, level), []).append(wall)
                    for recording, texts in zip(recordings[:level], segments, strict=True):
                        errors[name].append(word_error_rate(recording.text, " ".join(texts)))
                    print(f"   {name}, {level} at once: {wall:.1f} s, segments per recording {[len(texts) for texts in segments]}")
    finally:
        for service in services.values():
            service.close()
    print(f"{'recordings at once':<20}{'unbatched audio s/s':>22}{'batched audio s/s':>20}{'batched/unbatched':>20}")
    for level in levels:
        audio_s = sum(recording.seconds for recording in recordings[:level])
        plain, batched = (audio_s / statistics.median(walls[(name, level)]) for name in services)
        print(f"{level:<20}{plain:>22.2f}{batched:>20.2f}{batched / plain:>20.2f}")
    print(
        "word error rate, mean of every recording transcribed: "
        + ", ".join(f"{name} {statistics.mean(rates):.3f}" for name, rates in errors.items())
    )
    print(f"   load average after part 4: {os.getloadavg()[0]:.2f}")


BATCH_MEMORY_SCRIPT = """
import sys, threading, numpy as np
from pathlib import Path
from faster_whisper import WhisperModel
from faster_whisper.audio import decode_audio
from schulki.transcription import batching
from schulki.transcription.engine import limit_malloc_arenas
limit_malloc_arenas()  # as the service does
path, model_dir, threads, beam, batch = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])
status = lambda key: [int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(key)][0] / 1024
model = WhisperModel(model_dir, device="cpu", compute_type="int8", cpu_threads=threads, local_files_only=True)
speech = batching.window_speech(decode_audio(path))
speech.chunks, speech.metadata = speech.chunks[:8], speech.metadata[:8]
decoder = batching.BatchDecoder(model, batch, beam)
first = decoder.submit(batching.Decoding("de", "transcribe", None, False, None), batching.WindowSpeech(speech.chunks[:1], speech.metadata[:1], []))
list(decoder.results(first, threading.Event()))  # one chunk alone: the model's own buffers are allocated
loaded = status("VmHWM")
chunks = decoder.submit(batching.Decoding("de", "transcribe", None, False, None), speech)
list(decoder.results(chunks, threading.Event()))
print(loaded, status("VmHWM"), len(chunks), decoder.largest_batch)
"""


def batch_memory(folder: Path, args: argparse.Namespace, model_dir: Path) -> None:
    """Part 5: the peak memory of decoding 8 chunks in batches of 1, 4 and 8, each in a fresh process."""
    speech, seconds, _ = make_recording(folder, 4.2, "batch-memory", seed=5)  # at least 8 chunks of up to 30 s
    print(f"\n5. memory of a batch: {seconds:.0f} s of speech in chunks of up to 30 s, each batch size in a fresh process")
    peaks = {}
    for batch in (1, 4, 8):
        out = subprocess.run(
            [sys.executable, "-c", BATCH_MEMORY_SCRIPT, str(speech), str(model_dir), str(args.threads), str(args.beam_size), str(batch)],
            check=True,
            capture_output=True,
            text=True,
            cwd=REPO,
        ).stdout.split()
        loaded, peak, chunks, largest = float(out[0]), float(out[1]), int(out[2]), int(out[3])
        peaks[batch] = peak - loaded
        print(
            f"   batch {batch}: {chunks} chunks, largest batch {largest}, peak {peak:.0f} MiB, {peak - loaded:.0f} MiB above one chunk alone"
        )
    model_mib = (model_dir / "model.bin").stat().st_size / 2**20
    per_chunk = (peaks[8] - peaks[1]) / 7
    print(
        f"   per chunk in a batch: {per_chunk:.1f} MiB ((batch 8 - batch 1) / 7); "
        f"model.bin {model_mib:.0f} MiB, so {per_chunk / model_mib:.3f} of the model's size per chunk"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--minutes",
        type=float,
        default=1.5,
        help="length of the recording for the overhead comparison (within one window, so both do the same work; 0 skips it)",
    )
    parser.add_argument("--repeats", type=int, default=3, help="runs of each, alternating")
    parser.add_argument("--long-minutes", type=float, default=10.0, help="length of the long recording (0 skips it)")
    parser.add_argument("--direct-long", action="store_true", help="also measure faster-whisper's own peak memory on the long recording")
    parser.add_argument(
        "--growing-minutes",
        type=float,
        default=60.0,
        help="length of the recording for which the stages that grow with length (decode, VAD, features) "
        "are measured in windows and as a whole (0 skips it)",
    )
    parser.add_argument("--batch-minutes", type=float, default=1.0, help="length of each recording sent at once in part 4 (0 skips it)")
    parser.add_argument(
        "--batch-size", type=int, default=Config().transcription.batch_size, help="batch size of the batched service in part 4"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of part 4 (the median is printed)")
    parser.add_argument("--at-once", type=int, nargs="+", default=[1, 2, 4], help="how many recordings are sent at once in part 4")
    parser.add_argument("--batch-memory", action="store_true", help="also measure the memory of a batch (part 5)")
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--beam-size", type=int, default=Config().transcription.beam_size)
    args = parse_args(
        parser, minutes=0.1, repeats=1, long_minutes=0.1, growing_minutes=0.5, beam_size=1, batch_minutes=0.1, rounds=1, at_once=[1, 2]
    )
    for tool in ("espeak-ng", "ffmpeg"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} is missing (Debian packages espeak-ng and ffmpeg)")

    model_dir = speech_model_path(Config())
    print(f"machine: {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f} (shared machine: other work may run beside this)")
    print(f"model: {model_dir.name}, cpu int8, {args.threads} threads, beam {args.beam_size}, VAD on")
    with tempfile.TemporaryDirectory(prefix="schulki-bench-") as tmp:
        folder = Path(tmp)
        if args.minutes > 0:
            overhead(folder, args, model_dir)
        if args.long_minutes > 0:
            long, long_s, _ = make_recording(folder, args.long_minutes, "long", seed=2)
            print(
                f"\n2. long recording: {long_s / 60:.1f} min of German speech (mp3, {long.stat().st_size / 1e6:.1f} MB) through a fresh service"
            )
            service = Service(args.threads, args.beam_size)
            try:
                loaded_rss, _ = peak_rss_mb(service.pid)
                elapsed, texts = service.transcribe(long)
                _, peak = peak_rss_mb(service.pid)
            finally:
                service.close()
            print(
                f"   service: RTF {elapsed / long_s:.3f} ({elapsed:.0f} s, {len(texts)} segments); "
                f"memory {loaded_rss:.0f} MiB after loading, peak {peak:.0f} MiB"
            )
            if args.direct_long:
                out = subprocess.run(
                    [sys.executable, "-c", DIRECT_SCRIPT, str(long), str(model_dir), str(args.threads), str(args.beam_size)],
                    check=True,
                    capture_output=True,
                    text=True,
                ).stdout.split()
                print(f"   direct faster-whisper: RTF {float(out[0]) / long_s:.3f} ({out[1]} segments), peak {float(out[2]):.0f} MiB")
        if args.growing_minutes > 0:
            hour, hour_s, _ = make_recording(folder, args.growing_minutes, "hour", seed=3)
            window_s = Config().transcription.window_s
            print(f"\n3. the stages that grow with length (decode, VAD, features; no Whisper decoding), {hour_s / 60:.0f} min recording:")
            for mode, label in (("windows", f"schulki, {window_s:.0f} s windows"), ("whole", "faster-whisper, whole file")):
                out = subprocess.run(
                    [sys.executable, "-c", GROWING_SCRIPT, str(hour), mode, str(window_s)],
                    check=True,
                    capture_output=True,
                    text=True,
                    cwd=REPO,
                ).stdout.split()
                print(f"   {label}: peak {float(out[0]):.0f} MiB")
        if args.batch_minutes > 0:
            concurrent_recordings(folder, args)
        if args.batch_memory:
            batch_memory(folder, args, model_dir)
    print(f"\nload average at the end: {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
