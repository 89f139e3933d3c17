"""Transcripts as plain text, SubRip (srt) and WebVTT (vtt), in one place.

The gateway's download buttons and the OpenAI-compatible
``/v1/audio/transcriptions`` (``response_format`` text, srt, vtt) both use
these functions. They are pure: a segment is anything with ``.start`` and
``.end`` (seconds, float) and ``.text`` — the proto ``Segment`` fits, and so
does ``TranscriptSegment`` below. This module imports nothing heavy, so the
gateway can use it without faster-whisper installed.

    from schulki.transcription.export import to_srt
    srt = to_srt(segments)
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Protocol


class SegmentLike(Protocol):
    """What the export functions read from a segment."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class TranscriptSegment:
    """One stretch of recognised speech, for callers that hold no proto messages."""

    start: float
    """Start in seconds from the beginning of the recording."""
    end: float
    """End in seconds."""
    text: str
    """The recognised text."""


_BLANK_LINES = re.compile(r"\n\s*\n+")


def _clean(text: str) -> str:
    """The cue text without surrounding space and without blank lines (a blank line ends a cue)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n").strip()
    return _BLANK_LINES.sub("\n", text)


def _cues(segments: Iterable[SegmentLike]) -> list[tuple[int, int, str]]:
    """Segments with text, as (start ms, end ms, text); times never negative, end never before start."""
    cues = []
    for segment in segments:
        text = _clean(segment.text)
        if not text:
            continue
        start = max(0, round(float(segment.start) * 1000))
        end = max(start, round(float(segment.end) * 1000))
        cues.append((start, end, text))
    return cues


def _timestamp(ms: int, separator: str) -> str:
    hours, rest = divmod(ms, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    seconds, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{seconds:02d}{separator}{millis:03d}"


def srt_timestamp(seconds: float) -> str:
    """A time as SubRip writes it: ``HH:MM:SS,mmm``."""
    return _timestamp(max(0, round(seconds * 1000)), ",")


def vtt_timestamp(seconds: float) -> str:
    """A time as WebVTT writes it: ``HH:MM:SS.mmm``."""
    return _timestamp(max(0, round(seconds * 1000)), ".")


def to_txt(segments: Iterable[SegmentLike]) -> str:
    """The transcript as plain text, one segment per line."""
    lines = [text for _, _, text in _cues(segments)]
    return "".join(line + "\n" for line in lines)


def to_srt(segments: Iterable[SegmentLike]) -> str:
    """The transcript as SubRip: numbered cues from 1, ``start --> end``, the text, a blank line."""
    blocks = []
    for number, (start, end, text) in enumerate(_cues(segments), start=1):
        blocks.append(f"{number}\n{_timestamp(start, ',')} --> {_timestamp(end, ',')}\n{text}\n")
    return "\n".join(blocks)


def _vtt_text(text: str) -> str:
    # Cue text is markup in WebVTT: "&" and "<" must be escaped, and escaping ">"
    # too means no cue can contain "-->", which the format forbids.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def to_vtt(segments: Iterable[SegmentLike]) -> str:
    """The transcript as WebVTT: the ``WEBVTT`` header, then cues ``start --> end`` and their text."""
    blocks = ["WEBVTT\n"]
    for start, end, text in _cues(segments):
        blocks.append(f"{_timestamp(start, '.')} --> {_timestamp(end, '.')}\n{_vtt_text(text)}\n")
    return "\n".join(blocks)


EXPORTERS: dict[str, Callable[[Iterable[SegmentLike]], str]] = {"txt": to_txt, "srt": to_srt, "vtt": to_vtt}
"""Export function per format name."""

MEDIA_TYPES: dict[str, str] = {
    "txt": "text/plain; charset=utf-8",
    "srt": "application/x-subrip; charset=utf-8",
    "vtt": "text/vtt; charset=utf-8",
}
"""The HTTP Content-Type per format name."""


def export(segments: Iterable[SegmentLike], fmt: str) -> str:
    """The transcript in the named format (txt, srt or vtt); ValueError for any other."""
    try:
        exporter = EXPORTERS[fmt]
    except KeyError:
        raise ValueError(f"unknown transcript format {fmt!r}; known: {', '.join(EXPORTERS)}") from None
    return exporter(segments)
