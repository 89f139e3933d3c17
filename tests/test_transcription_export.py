"""Transcript export: txt, SubRip and WebVTT, checked against the formats' rules."""

from __future__ import annotations

import re

import pytest
from schulki.transcription.export import MEDIA_TYPES, TranscriptSegment, export, srt_timestamp, to_srt, to_txt, to_vtt, vtt_timestamp
from schulki.transcription.v1 import transcription_service_pb2 as pb

SRT_TIME = r"(\d{2}):(\d{2}):(\d{2}),(\d{3})"
SRT_TIMING = re.compile(rf"^{SRT_TIME} --> {SRT_TIME}$")
VTT_TIME = r"(?:(\d{2,}):)?([0-5]\d):([0-5]\d)\.(\d{3})"
VTT_TIMING = re.compile(rf"^{VTT_TIME} --> {VTT_TIME}(?: .*)?$")

LESSON = [
    TranscriptSegment(0.0, 2.5, " Guten Morgen, liebe Klasse."),
    TranscriptSegment(2.5, 61.25, " Heute ist Montag."),
    TranscriptSegment(3725.5, 3727.0, "Auf Wiedersehen!"),
]


def ms(h, m, s, f) -> int:
    return ((int(h or 0) * 60 + int(m)) * 60 + int(s)) * 1000 + int(f)


def parse_srt(document: str) -> list[tuple[int, int, str]]:
    """A strict SubRip reader: numbered cues from 1, a timing line, text lines, one blank line between cues."""
    assert document.endswith("\n") and not document.endswith("\n\n\n")
    cues = []
    for number, block in enumerate(document.rstrip("\n").split("\n\n"), start=1):
        lines = block.split("\n")
        assert lines[0] == str(number), block
        timing = SRT_TIMING.match(lines[1])
        assert timing, lines[1]
        start, end = ms(*timing.groups()[:4]), ms(*timing.groups()[4:])
        assert 0 <= start <= end
        assert len(lines) >= 3 and all(line.strip() for line in lines[2:]), block
        cues.append((start, end, "\n".join(lines[2:])))
    return cues


def parse_vtt(document: str) -> list[tuple[int, int, str]]:
    """A strict WebVTT reader for what schulki writes: the header, then cues of a timing line and text."""
    assert document.startswith("WEBVTT\n")
    body = document[len("WEBVTT\n") :]
    assert body == "" or body.startswith("\n")  # a blank line ends the header
    cues = []
    for block in body.strip("\n").split("\n\n") if body.strip() else []:
        lines = block.split("\n")
        timing = VTT_TIMING.match(lines[0])
        assert timing, lines[0]
        start, end = ms(*timing.groups()[:4]), ms(*timing.groups()[4:])
        assert 0 <= start <= end
        text = lines[1:]
        assert text and all(line.strip() for line in text), block
        for line in text:
            assert "-->" not in line
            assert "<" not in line  # schulki writes no tags, so any "<" would be unescaped text
            assert not re.search(r"&(?!amp;|lt;|gt;)", line), line
        cues.append((start, end, "\n".join(text)))
    return cues


def unescape_vtt(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def test_srt_numbers_cues_and_writes_comma_milliseconds():
    document = to_srt(LESSON)
    assert document.startswith("1\n00:00:00,000 --> 00:00:02,500\nGuten Morgen, liebe Klasse.\n\n2\n")
    cues = parse_srt(document)
    assert [c[2] for c in cues] == ["Guten Morgen, liebe Klasse.", "Heute ist Montag.", "Auf Wiedersehen!"]
    assert cues[1][:2] == (2500, 61250)
    assert "01:02:05,500 --> 01:02:07,000" in document


def test_vtt_has_the_header_and_dot_milliseconds():
    document = to_vtt(LESSON)
    assert document.startswith("WEBVTT\n\n00:00:00.000 --> 00:00:02.500\nGuten Morgen, liebe Klasse.\n")
    cues = parse_vtt(document)
    assert [c[:2] for c in cues] == [(0, 2500), (2500, 61250), (3725500, 3727000)]


def test_txt_has_one_line_per_segment():
    assert to_txt(LESSON) == "Guten Morgen, liebe Klasse.\nHeute ist Montag.\nAuf Wiedersehen!\n"


def test_cue_text_that_would_break_the_format_is_made_safe():
    tricky = [
        TranscriptSegment(1.0, 2.0, "Pfeil --> nach rechts"),
        TranscriptSegment(2.0, 3.0, "Tom & Jerry <b>laut</b>"),
        TranscriptSegment(3.0, 4.0, "erste Zeile\n\n\nzweite Zeile"),
    ]
    vtt = parse_vtt(to_vtt(tricky))
    assert [unescape_vtt(c[2]) for c in vtt] == ["Pfeil --> nach rechts", "Tom & Jerry <b>laut</b>", "erste Zeile\nzweite Zeile"]
    srt = parse_srt(to_srt(tricky))
    assert len(srt) == 3 and srt[2][2] == "erste Zeile\nzweite Zeile"


def test_empty_segments_are_left_out_and_numbering_stays_continuous():
    segments = [TranscriptSegment(0, 1, "Eins"), TranscriptSegment(1, 2, "   "), TranscriptSegment(2, 3, "Zwei")]
    assert [c[2] for c in parse_srt(to_srt(segments))] == ["Eins", "Zwei"]
    assert to_srt(segments).split("\n\n")[1].startswith("2\n")
    assert to_txt(segments) == "Eins\nZwei\n"


def test_no_segments_give_valid_empty_documents():
    assert to_srt([]) == ""
    assert to_txt([]) == ""
    assert parse_vtt(to_vtt([])) == []


def test_times_round_to_milliseconds_and_never_run_backwards():
    assert srt_timestamp(1.9996) == "00:00:02,000"
    assert vtt_timestamp(59.9999) == "00:01:00.000"
    assert srt_timestamp(-0.5) == "00:00:00,000"
    assert vtt_timestamp(100 * 3600 + 1.5) == "100:00:01.500"
    (cue,) = parse_srt(to_srt([TranscriptSegment(5.0, 4.0, "rückwärts")]))
    assert cue[:2] == (5000, 5000)


def test_proto_segments_export_directly():
    segments = [pb.Segment(index=0, start=0.5, end=1.25, text=" Hallo"), pb.Segment(index=1, start=1.25, end=2.0, text=" Welt")]
    assert parse_srt(to_srt(segments)) == [(500, 1250, "Hallo"), (1250, 2000, "Welt")]
    assert export(segments, "vtt") == to_vtt(segments)
    assert export(segments, "txt") == "Hallo\nWelt\n"


def test_an_unknown_format_is_refused():
    with pytest.raises(ValueError, match="docx"):
        export(LESSON, "docx")
    assert set(MEDIA_TYPES) == {"txt", "srt", "vtt"}
