"""The speech engine: one faster-whisper model, run on worker threads, streamed to asyncio.

faster-whisper blocks while it works, so every transcription runs on one of
the engine's worker threads (as many as may run at once) and hands its results
to the event loop through a queue, the way the inference engine does. The
recording is decoded and transcribed window by window (see ``audio.windows``),
so memory stays bounded however long it is. Voice activity detection runs
here, per window, before Whisper: a window without speech is skipped instead
of being handed to Whisper, which invents text for silence. With batching on
(the default), each window's speech goes to the batch decoder, which decodes it
together with the speech of the other recordings running (see batching.py).
"""

from __future__ import annotations

import concurrent.futures
import ctypes
import logging
import os
import threading
import time
from collections.abc import AsyncGenerator, Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from schulki.config import TranscriptionConfig
from schulki.runtime.errors import ModelLoadError, NotReady
from schulki.runtime.threads import stream_from_thread
from schulki.transcription import audio, batching

# No model hub and no telemetry: the model is a local folder.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

log = logging.getLogger("schulki.transcription")

SILENCE_PEAK = 10 ** (-60 / 20)
"""A window whose loudest sample stays below -60 dBFS is silence, with or without VAD."""
CARRIED_PROMPT_CHARS = 200
"""Text of the previous window handed to the next one as context, so style and names carry over."""
MODEL_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.json")
WHISPER_NO_SPEECH_THRESHOLD = 0.6
"""faster-whisper's own silence check, used only where voice activity detection did not run (``disable_vad``).

Where it did, Whisper hears only what VAD judged to be speech, and its second opinion is turned off
(``no_speech_threshold=None``): when a 30 s stretch of hard speech (espeak-ng German of random sentences) failed every
temperature of the fallback and its no-speech probability was over 0.6 (0.66 to 0.86 measured), faster-whisper
skipped the whole stretch as silence, and a recording of one minute of speech came back with 0 segments and no
error. Which stretch failed depended on the random draws of the sampling fallback, so it showed at random, most
often when several recordings were sent at once (more recordings, more chances)."""


@dataclass
class TranscriptionJob:
    """One recording to transcribe, checked and ready for the engine."""

    path: Path
    language: str | None = None
    task: str = "transcribe"
    initial_prompt: str | None = None
    word_timestamps: bool = False
    vad: bool = True


@dataclass
class Word:
    """One word with its timing, in seconds from the start of the recording."""

    start: float
    end: float
    text: str
    probability: float


@dataclass
class Segment:
    """One recognised stretch of speech, in seconds from the start of the recording."""

    index: int
    start: float
    end: float
    text: str
    words: list[Word] = field(default_factory=list)


@dataclass
class Language:
    """The language spoken (detected, or as the caller named it)."""

    language: str
    probability: float


@dataclass
class TranscriptionDone:
    """How a transcription ended (the last item of its stream, and the engine's log line)."""

    duration: float = 0.0
    """Seconds of audio decoded."""
    speech_duration: float = 0.0
    """Seconds handed to Whisper after voice activity detection."""
    segment_count: int = 0
    cancelled: bool = False
    seconds_taken: float = 0.0


MALLOC_ARENAS = 2
"""glibc gives every thread that allocates its own memory arena, and the worker, CTranslate2 and
ONNX threads each keep theirs filled: a 10-minute recording through the service peaked at 975 MiB
with the default and at 772 MiB with two arenas (631 MiB with MALLOC_ARENA_MAX=2 set before start)."""


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas for this process (like MALLOC_ARENA_MAX); False where that is not glibc."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        return libc.mallopt(-8, arenas) == 1  # -8 is M_ARENA_MAX
    except (OSError, AttributeError):
        return False


def resolve_device(config: TranscriptionConfig) -> tuple[str, str]:
    """The CTranslate2 device and compute type for these settings: int8 on the CPU, float16 on a GPU."""
    import ctranslate2

    device = config.device
    if device == "auto":
        device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    elif device == "cuda" and ctranslate2.get_cuda_device_count() == 0:
        raise ModelLoadError("device = cuda, but CTranslate2 finds no CUDA GPU here; set device = auto or cpu")
    compute_type = config.compute_type
    if compute_type in ("default", "auto"):
        compute_type = "float16" if device == "cuda" else "int8"
    supported = ctranslate2.get_supported_compute_types(device)
    if compute_type not in supported:
        raise ModelLoadError(f"compute type {compute_type} is not supported on {device}; choose one of {', '.join(sorted(supported))}")
    return device, compute_type


class SpeechEngine:
    """A loaded Whisper model that transcribes recordings on worker threads."""

    def __init__(self, model_path: Path, config: TranscriptionConfig):
        limit_malloc_arenas()  # before the worker threads exist, so they share the arenas
        self.model_path = model_path
        self.config = config
        self._model: Any = None  # a faster_whisper.WhisperModel once loaded (faster-whisper has no type information)
        self._workers = concurrent.futures.ThreadPoolExecutor(max_workers=config.max_concurrent, thread_name_prefix="whisper")
        self.device = ""
        self.compute_type = ""
        self.batcher: batching.BatchDecoder | None = None
        """Decodes the speech of all running recordings in batches, when batching is on (see batching.py)."""

    def load(self) -> None:
        """Load the model; raise ModelLoadError with a one-line reason if it cannot be."""
        missing = [name for name in MODEL_FILES if not (self.model_path / name).is_file()]
        if missing:
            raise ModelLoadError(
                f"Whisper model folder {self.model_path} lacks {', '.join(missing)}; "
                "prepare the default model with: .venv/bin/python -m schulki.models.defaults"
            )
        # onnxruntime (faster-whisper's voice activity detection runs on it) ships Microsoft's 1DS
        # telemetry on Linux since 1.29: it looks up mobile.events.data.microsoft.com while recordings
        # are transcribed. Nothing of a school may leave the building. Only this variable, set before
        # onnxruntime starts, turns it off entirely (disable_telemetry_events() does not stop the lookups).
        os.environ["ORT_DISABLE_TELEMETRY"] = "1"
        from faster_whisper import WhisperModel

        self.device, self.compute_type = resolve_device(self.config)
        started = time.perf_counter()
        try:
            self._model = WhisperModel(
                str(self.model_path),
                device=self.device,
                compute_type=self.compute_type,
                cpu_threads=self.config.threads,
                num_workers=self.config.max_concurrent,
                local_files_only=True,
            )
        except (RuntimeError, ValueError, OSError) as error:
            raise ModelLoadError(f"cannot load Whisper model {self.model_path}: {str(error).splitlines()[0]}") from None
        self._match_mel_bands()
        if self.config.batching:
            self.batcher = batching.BatchDecoder(self._model, self.config.batch_size, self.config.beam_size)
        log.info("loaded %s on %s (%s) in %.1f s", self.model_path.name, self.device, self.compute_type, time.perf_counter() - started)

    def _match_mel_bands(self) -> None:
        """Give the feature extractor the mel bands the model expects.

        faster-whisper reads them from preprocessor_config.json and falls back
        to 80 without one; large-v3 and its turbo need 128, and some
        conversions (the catalog's large-v3-turbo) ship no such file.
        """
        from faster_whisper.feature_extractor import FeatureExtractor

        wanted = self._loaded.model.n_mels
        if self._loaded.feature_extractor.mel_filters.shape[0] != wanted:
            log.info("%s expects %d mel bands; its folder said otherwise", self.model_path.name, wanted)
            self._loaded.feat_kwargs = {**self._loaded.feat_kwargs, "feature_size": wanted}
            self._loaded.feature_extractor = FeatureExtractor(**self._loaded.feat_kwargs)

    @property
    def _loaded(self) -> Any:
        """The WhisperModel; NotReady before load() and after close()."""
        if self._model is None:
            raise NotReady("Das Sprachmodell ist nicht geladen. (the speech model is not loaded)")
        return self._model

    def close(self) -> None:
        """Free the model once running work is done."""
        self._workers.shutdown(wait=True)
        if self.batcher is not None:
            self.batcher.close()
            self.batcher = None
        self._model = None

    @property
    def multilingual(self) -> bool:
        """Whether the model knows languages other than English (and can translate)."""
        return self._loaded.model.is_multilingual

    @property
    def languages(self) -> list[str]:
        """The language codes the model knows."""
        return self._loaded.supported_languages

    def transcribe(self, job: TranscriptionJob) -> AsyncGenerator[Language | Segment | TranscriptionDone, None]:
        """Yield the Language, then each Segment as it is recognised, then TranscriptionDone.

        Closing the iterator early (the caller cancelled) stops the worker at the
        next segment or decoded frame; it is free again when this returns.
        """
        return stream_from_thread(self._workers, lambda emit, cancelled: self._transcribe_blocking(job, emit, cancelled))

    def _detect_language(self, samples: np.ndarray) -> tuple[str, float]:
        """The spoken language of a recording's first speech and its probability, weighted toward the school's language.

        Whisper's own guess is taken unless the school's default language, weighted by
        default_language_weight, is at least as likely: a short German clip that Whisper
        calls English with 0.8 and German with 0.1 is German here.
        """
        detected, probability, all_probabilities = self._loaded.detect_language(samples)
        default = self.config.default_language
        if default and detected != default:
            default_probability = dict(all_probabilities).get(default, 0.0)
            if default_probability * self.config.default_language_weight >= probability:
                return default, float(default_probability)
        return detected, float(probability)

    def _transcribe_blocking(
        self, job: TranscriptionJob, emit: Callable[[Language | Segment], None], cancelled: threading.Event
    ) -> TranscriptionDone:
        from faster_whisper.transcribe import restore_speech_timestamps

        started = time.perf_counter()
        done = TranscriptionDone()
        language = job.language
        language_sent = False
        previous_text = ""
        windows = audio.windows(job.path, self.config.window_s, self.config.max_duration_s, cancelled)
        try:
            for offset, window in windows:
                done.duration = offset + window.size / audio.SAMPLE_RATE
                if cancelled.is_set():
                    raise audio.Cancelled()
                if window.size == 0 or float(np.max(np.abs(window))) < SILENCE_PEAK:
                    continue
                if self.batcher is not None and job.vad:
                    language, language_sent = self._transcribe_window_batched(
                        job, window, offset, (language, language_sent), done, emit, cancelled
                    )
                    continue
                speech = _speech(window, job.vad)
                if speech is None:
                    continue
                samples, speech_chunks = speech
                done.speech_duration += samples.size / audio.SAMPLE_RATE
                if language is None:
                    language, probability = self._detect_language(samples)
                    emit(Language(language, probability))
                    language_sent = True
                prompt = " ".join(p for p in (job.initial_prompt, previous_text[-CARRIED_PROMPT_CHARS:]) if p) or None
                segments, info = self._loaded.transcribe(
                    samples,
                    language=language,
                    task=job.task,
                    beam_size=self.config.beam_size,
                    initial_prompt=prompt,
                    word_timestamps=job.word_timestamps,
                    vad_filter=False,
                    no_speech_threshold=None if job.vad else WHISPER_NO_SPEECH_THRESHOLD,
                )
                del samples  # the speech-only copy goes once Whisper has its features
                if not language_sent:
                    emit(Language(info.language, float(info.language_probability)))
                    language_sent = True
                # Every later window keeps the language of the first, so a recording is not split between languages.
                language = language or info.language
                if speech_chunks:
                    segments = restore_speech_timestamps(segments, speech_chunks, audio.SAMPLE_RATE)
                texts = _emit_segments(segments, offset, done, emit, cancelled)
                previous_text = " ".join(texts) or previous_text
        except audio.Cancelled:
            done.cancelled = True
        finally:
            windows.close()  # closes the file now, also when the loop ended early
            done.seconds_taken = time.perf_counter() - started
        if not language_sent:
            # Nothing was spoken: the caller's language, or none.
            emit(Language(job.language or "", 1.0 if job.language else 0.0))
        log.info(
            "transcribed %.1f s of audio (%.1f s speech) into %d segments in %.1f s%s",
            done.duration,
            done.speech_duration,
            done.segment_count,
            done.seconds_taken,
            " (cancelled)" if done.cancelled else "",
        )
        return done

    def _transcribe_window_batched(
        self,
        job: TranscriptionJob,
        window: np.ndarray,
        offset: float,
        known: tuple[str | None, bool],
        done: TranscriptionDone,
        emit: Callable[[Language | Segment], None],
        cancelled: threading.Event,
    ) -> tuple[str | None, bool]:
        """One window through the batch decoder. known and the result: the recording's language (detected on its first
        speech, then kept) and whether it was sent."""
        from faster_whisper.transcribe import restore_speech_timestamps

        assert self.batcher is not None
        language, sent = known
        speech = batching.window_speech(window)
        if speech is None:
            return known
        done.speech_duration += speech.samples / audio.SAMPLE_RATE
        if language is None:
            first = np.concatenate(speech.chunks)[: batching.CHUNK_S * audio.SAMPLE_RATE]
            language, probability = self._detect_language(first)
            emit(Language(language, probability))
        elif not sent:
            emit(Language(language, 1.0))
        decoding = batching.Decoding(language, job.task, job.initial_prompt, job.word_timestamps, id(job) if job.word_timestamps else None)
        chunks = self.batcher.submit(decoding, speech)
        try:
            decoded = restore_speech_timestamps(
                self._chunk_segments(job, language, speech, self.batcher.results(chunks, cancelled)),
                speech.speech_timestamps,
                audio.SAMPLE_RATE,
            )
            _emit_segments(decoded, offset, done, emit, cancelled)
        finally:
            for chunk in chunks:  # a failed or cancelled window leaves nothing for the batch thread
                chunk.result.cancel()
        return language, True

    def _chunk_segments(
        self, job: TranscriptionJob, language: str, speech: batching.WindowSpeech, outputs: Iterable[list[dict]]
    ) -> Iterator[Any]:
        """faster-whisper's Segment objects of each chunk (times in the window's speech-only timeline): the batched
        result, or where that failed, the chunk decoded again alone with the unbatched decoder's fallback."""
        for samples, metadata, output in zip(speech.chunks, speech.metadata, outputs, strict=True):
            if not batching.failed(output):
                yield from _whisper_segments(output)
                continue
            log.info("a chunk of %.1f s failed batched decoding; decoding it again alone", samples.size / audio.SAMPLE_RATE)
            segments, _ = self._loaded.transcribe(
                samples,
                language=language,
                task=job.task,
                beam_size=self.config.beam_size,
                initial_prompt=job.initial_prompt,
                word_timestamps=job.word_timestamps,
                vad_filter=False,
                no_speech_threshold=None,  # VAD found this speech (batching runs only with VAD)
            )
            shift = metadata["offset"]
            for segment in segments:
                segment.start, segment.end = segment.start + shift, segment.end + shift
                for word in segment.words or ():
                    word.start, word.end = word.start + shift, word.end + shift
                yield segment


def _whisper_segments(output: list[dict]) -> Iterator[Any]:
    """faster-whisper's Segment objects from one chunk's batched result, as its batched pipeline makes them."""
    from faster_whisper.transcribe import Segment as WhisperSegment
    from faster_whisper.transcribe import Word as WhisperWord

    for s in output:
        words = [WhisperWord(**w) for w in s["words"]] if "words" in s else None
        yield WhisperSegment(
            id=0,
            seek=s["seek"],
            start=round(s["start"], 3),
            end=round(s["end"], 3),
            text=s["text"],
            tokens=s["tokens"],
            avg_logprob=s["avg_logprob"],
            compression_ratio=s["compression_ratio"],
            no_speech_prob=s["no_speech_prob"],
            words=words,
            temperature=0.0,
        )


def _speech(window: np.ndarray, vad: bool) -> tuple[np.ndarray, list[dict] | None] | None:
    """The samples to transcribe and, with vad, the speech chunks they were cut from; None for a window without speech."""
    if not vad:
        return window, None
    from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

    speech_chunks = get_speech_timestamps(window, VadOptions())
    if not speech_chunks:
        return None
    parts, _ = collect_chunks(window, speech_chunks)
    return (parts[0] if len(parts) == 1 else np.concatenate(parts)), speech_chunks


def _emit_segments(
    segments: Iterable[Any], offset: float, done: TranscriptionDone, emit: Callable[[Language | Segment], None], cancelled: threading.Event
) -> list[str]:
    """Send each segment with text (its times moved by the window's offset); the texts sent."""
    texts = []
    for s in segments:
        if cancelled.is_set():
            raise audio.Cancelled()
        text = s.text.strip()
        if not text:
            continue
        words = [Word(offset + w.start, offset + w.end, w.word, float(w.probability)) for w in (s.words or ())]
        emit(Segment(done.segment_count, offset + s.start, offset + s.end, text, words))
        done.segment_count += 1
        texts.append(text)
    return texts
