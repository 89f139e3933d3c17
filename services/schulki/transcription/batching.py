"""Batched decoding: the speech of one window, and of every recording running beside it, through Whisper at once.

Unbatched, a recording is decoded 30 seconds after another and two recordings
decode side by side, each with its own share of the cores. Batched, each
recording's worker cuts its window's speech into chunks of at most 30 seconds
at the pauses voice activity detection finds (as faster-whisper's
``BatchedInferencePipeline`` does), computes their features and hands them to
one decoder thread. That thread takes whatever chunks wait, of every recording
(chunks that arrive while a batch runs are gathered for the next), up to
``batch_size``, and runs them through Whisper's encoder and decoder together
(``BatchedInferencePipeline.forward``). Each chunk's result goes back to its
own recording, so one recording's failure (a damaged file is found while its
worker decodes it) or cancel touches no other.

What faster-whisper's batched pipeline does not do, and this keeps in mind:
it needs voice activity detection to cut speech longer than 30 seconds (a
recording transcribed without VAD goes the unbatched way); it carries no text
from one chunk to the next and never falls back to sampling (see ``failed``); it detects the
language without the school's default weighting (the engine detects it first
and names it); its word timestamps keep state across the chunks of one batch
(chunks that ask for word timestamps are batched only with chunks of the same
recording); and it does not check ``batch_size`` (the settings do).
"""

from __future__ import annotations

import concurrent.futures
import logging
import queue
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from schulki.transcription import audio

log = logging.getLogger("schulki.transcription")

CHUNK_S = 30
"""Whisper hears 30 seconds at a time; a chunk holds at most that much speech."""
COMPRESSION_RATIO_LIMIT = 2.4
LOG_PROB_LIMIT = -1.0
"""A chunk's text that compresses better than COMPRESSION_RATIO_LIMIT (it repeats itself) or whose average log
probability is below LOG_PROB_LIMIT failed, as faster-whisper's unbatched decoder judges it (its defaults)."""
WITHOUT_TIMESTAMPS = False
"""Decode with Whisper's timestamp tokens, unlike the batched pipeline's default: without them Whisper ended a 30 s
chunk of espeak-ng German after its first sentence (1 segment where unbatched decoding found 6), and the rest of
the chunk was lost without any check noticing; with them it wrote the whole chunk (4 segments)."""
RESULT_POLL_S = 0.1
"""How often a worker waiting for its chunks checks whether its caller went away."""


@dataclass(frozen=True)
class Decoding:
    """What chunks must share to be decoded in one batch: the prompt Whisper starts from and the options."""

    language: str
    task: str
    initial_prompt: str | None
    word_timestamps: bool
    recording: int | None
    """With word timestamps, the recording the chunk belongs to (faster-whisper's word timing keeps state across a batch)."""


@dataclass(eq=False)  # a chunk is itself, whatever its features hold
class Chunk:
    """Up to 30 seconds of one recording's speech, waiting to be decoded."""

    decoding: Decoding
    features: np.ndarray
    metadata: dict
    """faster-whisper's chunk metadata: offset and duration in the speech-only timeline."""
    result: concurrent.futures.Future = field(default_factory=concurrent.futures.Future)


@dataclass
class WindowSpeech:
    """The speech of one window, cut into chunks for batching."""

    chunks: list[np.ndarray]
    metadata: list[dict]
    speech_timestamps: list[dict]
    """Where the speech lies in the window, in samples (to map times back)."""

    @property
    def samples(self) -> int:
        return sum(c.size for c in self.chunks)


def window_speech(window: np.ndarray) -> WindowSpeech | None:
    """The window's speech in chunks of at most 30 s, cut at pauses with the batched pipeline's VAD settings; None without speech."""
    from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

    timestamps = get_speech_timestamps(window, VadOptions(max_speech_duration_s=CHUNK_S, min_silence_duration_ms=160))
    if not timestamps:
        return None
    chunks, metadata = collect_chunks(window, timestamps, max_duration=CHUNK_S)
    return WindowSpeech(chunks, metadata, timestamps)


def failed(output: list[dict]) -> bool:
    """Whether a chunk's batched result failed the checks after which the unbatched decoder tries again with sampling.

    The batched pipeline skips them: on espeak-ng German it looped "fielen ihn am Outen langestrasen" to the end of a
    chunk (word error rate 0.88 where unbatched decoding had 0.26).
    """
    return any(s["compression_ratio"] > COMPRESSION_RATIO_LIMIT or s["avg_logprob"] < LOG_PROB_LIMIT for s in output)


class BatchDecoder:
    """One thread that decodes the waiting chunks of all recordings in batches of up to batch_size."""

    def __init__(self, model: Any, batch_size: int, beam_size: int):
        self.model = model  # a faster_whisper.WhisperModel
        self.batch_size = batch_size
        self.beam_size = beam_size
        self.batches = 0
        """Batches decoded so far, and the chunks in them (for tests and the log)."""
        self.chunks_decoded = 0
        self.largest_batch = 0
        self._waiting: queue.SimpleQueue[list[Chunk] | None] = queue.SimpleQueue()
        """The chunks of one window each, in the order they came; None closes."""
        self._thread = threading.Thread(target=self._run, name="whisper-batch", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._waiting.put(None)
        self._thread.join()

    def features(self, chunk: np.ndarray) -> np.ndarray:
        """Whisper's input for one chunk, padded to 30 seconds (computed on the recording's own worker, not here)."""
        from faster_whisper.audio import pad_or_trim

        return pad_or_trim(self.model.feature_extractor(chunk)[..., :-1])

    def submit(self, decoding: Decoding, speech: WindowSpeech) -> list[Chunk]:
        """Queue the window's chunks; their results come through each chunk's future."""
        # All features first, then the chunks as one item: put one by one, the first would start a batch of its own.
        submitted = [
            Chunk(decoding, self.features(samples), metadata) for samples, metadata in zip(speech.chunks, speech.metadata, strict=True)
        ]
        self._waiting.put(submitted)
        return submitted

    def results(self, chunks: list[Chunk], cancelled: threading.Event) -> Iterator[list[dict]]:
        """Each chunk's segments (faster-whisper's dicts), in order; stops with audio.Cancelled when the caller goes away.

        The chunks not yet decoded are withdrawn when this stops early, so the batch thread skips them.
        """
        try:
            for chunk in chunks:
                while True:
                    if cancelled.is_set():
                        raise audio.Cancelled()
                    try:
                        yield chunk.result.result(timeout=RESULT_POLL_S)
                        break
                    except concurrent.futures.TimeoutError:
                        continue
        finally:
            for chunk in chunks:
                chunk.result.cancel()

    def _run(self) -> None:
        pending: list[Chunk] = []
        while True:
            if not pending:
                first = self._waiting.get()
                if first is None:
                    return
                pending.extend(first)
            # Gather every chunk that arrived meanwhile, of every recording.
            while True:
                try:
                    more = self._waiting.get_nowait()
                except queue.Empty:
                    break
                if more is None:
                    self._fail(pending, RuntimeError("the speech model was closed"))
                    return
                pending.extend(more)
            try:
                pending = self._decode_next(pending)
            except Exception as error:  # a fault here must not leave every caller waiting on a dead thread
                log.exception("the batch thread failed")
                self._fail(pending, error)
                pending = []

    def _decode_next(self, pending: list[Chunk]) -> list[Chunk]:
        """Decode the oldest waiting chunk with those that share its decoding, up to batch_size; the chunks left waiting."""
        pending = [c for c in pending if not c.result.cancelled()]
        if not pending:
            return pending
        decoding = pending[0].decoding
        batch = [c for c in pending if c.decoding == decoding][: self.batch_size]
        pending = [c for c in pending if c not in batch]
        batch = [c for c in batch if c.result.set_running_or_notify_cancel()]
        if batch:
            self._decode(batch)
        return pending

    def _decode(self, batch: list[Chunk]) -> None:
        from faster_whisper.tokenizer import Tokenizer
        from faster_whisper.transcribe import BatchedInferencePipeline

        decoding = batch[0].decoding
        try:
            tokenizer = Tokenizer(self.model.hf_tokenizer, self.model.model.is_multilingual, task=decoding.task, language=decoding.language)
            pipeline = BatchedInferencePipeline(self.model)  # a fresh one: its word timing keeps state
            outputs = pipeline.forward(
                np.stack([c.features for c in batch]), tokenizer, [c.metadata for c in batch], self._options(tokenizer, decoding)
            )
        except Exception as error:  # the recordings of this batch fail with it; the thread goes on
            log.exception("batch of %d chunks failed", len(batch))
            self._fail(batch, error)
            return
        self.batches += 1
        self.chunks_decoded += len(batch)
        self.largest_batch = max(self.largest_batch, len(batch))
        for chunk, output in zip(batch, outputs, strict=True):
            chunk.result.set_result(output)

    @staticmethod
    def _fail(chunks: list[Chunk], error: BaseException) -> None:
        for chunk in chunks:
            if not chunk.result.done() and (chunk.result.running() or chunk.result.set_running_or_notify_cancel()):
                chunk.result.set_exception(error)

    def _options(self, tokenizer: Any, decoding: Decoding) -> Any:
        """The options BatchedInferencePipeline.transcribe would pass to forward, with schulki's beam size."""
        from faster_whisper.transcribe import TranscriptionOptions, get_suppressed_tokens

        return TranscriptionOptions(
            beam_size=self.beam_size,
            best_of=5,
            patience=1,
            length_penalty=1,
            repetition_penalty=1,
            no_repeat_ngram_size=0,
            log_prob_threshold=-1.0,
            no_speech_threshold=0.6,
            compression_ratio_threshold=2.4,
            temperatures=[0.0],
            initial_prompt=decoding.initial_prompt,
            prefix=None,
            suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
            prepend_punctuations="\"'“¿([{-",
            append_punctuations="\"'.。,，!！?？:：”)]}、",
            max_new_tokens=None,
            hotwords=None,
            word_timestamps=decoding.word_timestamps,
            hallucination_silence_threshold=None,
            condition_on_previous_text=False,
            clip_timestamps=[],
            prompt_reset_on_temperature=0.5,
            multilingual=False,
            without_timestamps=WITHOUT_TIMESTAMPS,
            max_initial_timestamp=0.0,
        )
