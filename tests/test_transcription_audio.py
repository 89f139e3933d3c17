"""Decoding recordings in windows with PyAV, without the speech model."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import pytest
from schulki.runtime.errors import TooLarge
from schulki.transcription import audio

SR = audio.SAMPLE_RATE


def run(*command: str) -> None:
    if shutil.which(command[0]) is None:
        pytest.fail(f"{command[0]} is missing: ./dev test installs it (Debian package {command[0]})")
    subprocess.run(command, check=True, capture_output=True)


@pytest.fixture(scope="module")
def tone(tmp_path_factory) -> Path:
    """35 s of a stereo 44.1 kHz tone with a short pause every 4 s, as flac."""
    folder = tmp_path_factory.mktemp("audio")
    beep, pause = folder / "beep.wav", folder / "pause.wav"
    run("sox", "-n", "-r", "44100", "-c", "2", str(beep), "synth", "3.8", "sine", "440", "vol", "0.5")
    run("sox", "-n", "-r", "44100", "-c", "2", str(pause), "trim", "0", "0.2")
    parts = [str(p) for _ in range(9) for p in (beep, pause)][:-1]  # 8.75 repetitions of 4 s
    path = folder / "tone.flac"
    run("sox", *parts, str(path), "trim", "0", "35")
    return path


def test_quiet_cut_ends_a_window_in_the_pause():
    window = np.full(10 * SR, 0.5, dtype=np.float32)
    window[int(8.3 * SR) : int(8.6 * SR)] = 0.0
    cut = audio.quiet_cut(window, search=3 * SR)
    assert int(8.3 * SR) <= cut <= int(8.6 * SR)


def test_windows_cover_the_whole_recording_once_and_in_order(tone):
    info = audio.probe(tone, max_duration_s=3600)
    assert info.duration == pytest.approx(35.0, abs=0.01)
    offsets, sizes, total = [], [], 0
    for offset, window in audio.windows(tone, window_s=10, max_duration_s=3600):
        assert window.dtype == np.float32 and window.ndim == 1
        assert 0 < window.size <= 10 * SR
        assert offset == pytest.approx(total / SR)  # no gap, no overlap
        offsets.append(offset)
        sizes.append(window.size)
        total += window.size
    assert total == pytest.approx(35 * SR, abs=SR // 100)  # resampled to 16 kHz mono
    # A cut is searched only in a window's last quarter, so every window but the last is long.
    assert len(offsets) >= 4 and all(size >= 7.5 * SR for size in sizes[:-1])


def test_windows_end_in_pauses_not_in_the_middle_of_a_sound(tone):
    for offset, window in list(audio.windows(tone, window_s=10, max_duration_s=3600))[:-1]:
        last = window[-SR // 40 :]  # the last 25 ms before the cut
        assert float(np.max(np.abs(last))) < 0.01, f"window at {offset:.2f} s ends in the tone"


def test_decoding_past_the_duration_limit_stops_with_too_large(tone):
    with pytest.raises(TooLarge, match="zu lang"):
        for _ in audio.windows(tone, window_s=10, max_duration_s=12):
            pass


def test_a_set_cancel_event_stops_decoding(tone):
    cancelled = threading.Event()
    pieces = audio.decode(tone, cancelled)
    next(pieces)
    cancelled.set()
    with pytest.raises(audio.Cancelled):
        next(pieces)
    with pytest.raises(audio.Cancelled):
        audio.probe(tone, 3600, cancelled)
