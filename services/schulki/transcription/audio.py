"""Reading recordings with PyAV: check them first, then decode them in windows.

``probe`` reads a file once without decoding it (only the container's packets),
so a file that is not audio, has no sound track or is too long fails at once,
before the caller waits for a turn. ``windows`` then decodes the sound to
16 kHz mono float32, the input Whisper wants, and hands it out in windows of a
few minutes with their time offset. Only one window is held at a time, so a
one-hour recording needs no more memory than a five-minute one. A window ends
at the quietest moment of its last seconds, so it rarely cuts a word in two;
the rest is carried into the next window.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from schulki.runtime.errors import InvalidInput, TooLarge

SAMPLE_RATE = 16000
"""Whisper's sample rate."""

ACCEPTED_FORMATS = frozenset(
    {
        "wav",
        "w64",
        "mp3",
        "mov",
        "mp4",
        "m4a",
        "3gp",
        "ogg",
        "flac",
        "matroska",
        "webm",
        "aac",
        "aiff",
        "caf",
        "amr",
        "avi",
        "asf",
        "mpeg",
        "mpegts",
    }
)
"""FFmpeg demuxer names accepted. FFmpeg reads many more (images, subtitle files, even
plain text as "tty"); anything else is refused as not a recording."""

NOT_AUDIO = (
    "Das ist keine Audio- oder Videodatei, die schulki lesen kann. Erlaubt sind zum Beispiel "
    "mp3, m4a, wav, ogg, flac, webm und mp4. (This is not an audio or video file schulki can read.)"
)
BROKEN = (
    "Die Datei ist beschädigt oder unvollständig, vielleicht wurde sie nicht fertig hochgeladen. "
    "Versuche es mit der vollständigen Datei. (The file is damaged or incomplete.)"
)
NO_AUDIO_TRACK = "Das Video hat keine Tonspur, es gibt also nichts zu verschriftlichen. (The video has no audio track.)"
NO_SOUND = "Die Datei enthält keinen Ton. (The file contains no audio.)"
TOO_LONG = (
    "Die Aufnahme ist zu lang: {minutes:.0f} Minuten, erlaubt sind höchstens {limit:.0f} Minuten. "
    "Teile sie in kürzere Stücke. (The recording is {seconds:.0f} s long; the limit is {limit_s:.0f} s.)"
)


class Cancelled(Exception):
    """The caller went away; decoding stopped."""


@dataclass(frozen=True)
class AudioInfo:
    """What ``probe`` learned about a recording without decoding it."""

    format_name: str
    """FFmpeg's name of the container format, for example ``mp3`` or ``matroska,webm``."""
    codec: str
    """The audio codec, for example ``aac`` or ``opus``."""
    duration: float
    """Length of the audio track in seconds, from its packets' timestamps."""
    has_video: bool
    """Whether the file also has a picture track (a video)."""


def too_long(seconds: float, limit_s: float) -> TooLarge:
    """The error for a recording over the duration limit."""
    return TooLarge(TOO_LONG.format(minutes=seconds / 60, limit=limit_s / 60, seconds=seconds, limit_s=limit_s))


def looks_like_media(head: bytes) -> bool:
    """Whether the first bytes carry the signature of a format we accept (so an unreadable file is damaged, not foreign)."""
    return (
        head[:4] in (b"RIFF", b"OggS", b"fLaC", b"FORM", b"caff", b"\x1aE\xdf\xa3", b"#!AM")
        or head[4:8] == b"ftyp"
        or head[:3] == b"ID3"
        or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0)  # an MPEG audio frame
    )


def _open(path: Path) -> av.container.InputContainer:
    try:
        container = av.open(str(path), mode="r", metadata_errors="ignore")
    except av.error.FFmpegError:
        with path.open("rb") as f:
            head = f.read(16)
        raise InvalidInput(BROKEN if looks_like_media(head) else NOT_AUDIO) from None
    if not ACCEPTED_FORMATS.intersection(container.format.name.split(",")):
        container.close()
        raise InvalidInput(NOT_AUDIO)
    return container


def probe(path: Path, max_duration_s: float, cancelled: threading.Event | None = None) -> AudioInfo:
    """Check that the file is a recording with sound within the duration limit, without decoding it."""
    if path.stat().st_size == 0:
        raise InvalidInput("Die Datei ist leer. (The upload is empty.)")
    with _open(path) as container:
        has_video = any(s.type == "video" for s in container.streams)
        if not container.streams.audio:
            raise InvalidInput(NO_AUDIO_TRACK if has_video else NO_SOUND)
        stream = container.streams.audio[0]
        codec = stream.codec_context.name
        # Headers may lie or be missing (a browser's webm recording has no duration),
        # so the packets' own timestamps decide; reading them costs no decoding.
        end, packets = 0.0, 0
        try:
            for packet in container.demux(stream):
                if cancelled is not None and cancelled.is_set():
                    raise Cancelled()
                if packet.pts is None or packet.time_base is None:
                    continue
                packets += 1
                end = max(end, float((packet.pts + (packet.duration or 0)) * packet.time_base))
                if end > max_duration_s:
                    raise too_long(end, max_duration_s)
        except av.error.FFmpegError:
            if packets == 0:
                raise InvalidInput(BROKEN) from None
        if packets == 0:  # a header without any sound after it
            raise InvalidInput(BROKEN)
        start = float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else 0.0
        return AudioInfo(container.format.name, codec, max(0.0, end - max(0.0, start)), has_video)


def _to_float(frame: av.AudioFrame) -> np.ndarray:
    return frame.to_ndarray()[0].astype(np.float32) / 32768.0


def decode(path: Path, cancelled: threading.Event | None = None) -> Iterator[np.ndarray]:
    """The audio track as 16 kHz mono float32 pieces, in order; damaged frames are skipped.

    The samples are exactly those of faster-whisper's own ``decode_audio``
    (16-bit from the resampler, then scaled to float), so a recording gives the
    same text through the service as through faster-whisper on the file.
    """
    resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE)
    produced = 0
    try:
        with _open(path) as container:
            if not container.streams.audio:
                raise InvalidInput(NO_AUDIO_TRACK)
            frames = container.decode(container.streams.audio[0])
            while True:
                if cancelled is not None and cancelled.is_set():
                    raise Cancelled()
                try:
                    frame = next(frames)
                except StopIteration:
                    break
                except av.error.InvalidDataError:
                    continue  # one damaged frame: the decoder resynchronises at the next
                except av.error.FFmpegError:
                    if produced == 0:
                        raise InvalidInput(BROKEN) from None
                    break  # the rest of the file is unreadable (cut off): keep what was there
                frame.pts = None  # the resampler must not insist on gapless timestamps
                for out in resampler.resample(frame):
                    samples = _to_float(out)
                    produced += samples.size
                    yield samples
            for out in resampler.resample(None):
                samples = _to_float(out)
                produced += samples.size
                yield samples
    finally:
        # PyAV's resampler keeps native buffers until the garbage collector runs.
        del resampler
        gc.collect()
    if produced == 0:
        raise InvalidInput(NO_SOUND)


def quiet_cut(window: np.ndarray, search: int, frame: int = SAMPLE_RATE // 10) -> int:
    """Where to end a window: the middle of the quietest frame within its last ``search`` samples."""
    start = max(0, window.size - search)
    tail = window[start:]
    frames = tail.size // frame
    if frames < 2:
        return window.size
    energy = np.square(tail[: frames * frame].reshape(frames, frame)).sum(axis=1)
    return start + int(np.argmin(energy)) * frame + frame // 2


def windows(
    path: Path, window_s: float, max_duration_s: float, cancelled: threading.Event | None = None
) -> Generator[tuple[float, np.ndarray], None, None]:
    """The decoded audio as (offset in seconds, samples) windows of at most ``window_s``.

    Each yielded array is a view into one reused buffer: the caller must be done
    with it before asking for the next window.
    """
    size = int(window_s * SAMPLE_RATE)
    search = min(size // 4, 10 * SAMPLE_RATE)
    limit = int(max_duration_s * SAMPLE_RATE)
    buffer = np.empty(size, dtype=np.float32)
    filled = 0
    offset = 0  # samples before the buffer's start
    for piece in decode(path, cancelled):
        if offset + filled + piece.size > limit:
            raise too_long((offset + filled + piece.size) / SAMPLE_RATE, max_duration_s)
        pos = 0
        while pos < piece.size:
            n = min(size - filled, piece.size - pos)
            buffer[filled : filled + n] = piece[pos : pos + n]
            filled += n
            pos += n
            if filled == size:
                cut = quiet_cut(buffer, search)
                yield offset / SAMPLE_RATE, buffer[:cut]
                rest = filled - cut
                buffer[:rest] = buffer[cut:filled]  # numpy copies overlapping ranges correctly
                filled, offset = rest, offset + cut
    if filled:
        yield offset / SAMPLE_RATE, buffer[:filled]
