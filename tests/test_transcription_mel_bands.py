"""A Whisper folder whose preprocessor_config.json is missing or wrong still gets the mel bands its model expects.

faster-whisper takes the number of mel bands from preprocessor_config.json and
falls back to 80; large-v3 and its turbo need 128, and the catalog's turbo
source ships no such file. Here the real Whisper base (80 bands) gets a folder
that claims 128, the mismatch that file's absence causes for the turbo model.
"""

from __future__ import annotations

import json
import os
import subprocess

import numpy as np
from schulki.config import Config, TranscriptionConfig
from schulki.models.defaults import speech_model_path
from schulki.transcription.engine import MODEL_FILES, SpeechEngine


def test_the_engine_takes_the_mel_bands_from_the_model_not_from_the_folder(tmp_path):
    folder = tmp_path / "whisper"
    folder.mkdir()
    for name in MODEL_FILES:
        os.symlink(speech_model_path(Config()) / name, folder / name)
    (folder / "preprocessor_config.json").write_text(json.dumps({"feature_size": 128}))
    engine = SpeechEngine(folder, TranscriptionConfig(device="cpu", threads=1, max_concurrent=1))
    engine.load()
    try:
        model = engine._model
        assert model.model.n_mels == 80
        assert model.feature_extractor.mel_filters.shape[0] == 80
        wav = tmp_path / "hallo.wav"
        subprocess.run(["espeak-ng", "-v", "de", "-s", "140", "-w", str(wav), "Guten Morgen, liebe Klasse."], check=True)
        audio = subprocess.run(
            ["ffmpeg", "-v", "error", "-i", str(wav), "-f", "f32le", "-ac", "1", "-ar", "16000", "-"], capture_output=True, check=True
        ).stdout
        segments, _ = model.transcribe(np.frombuffer(audio, dtype=np.float32), language="de", beam_size=1)
        assert "morgen" in " ".join(s.text for s in segments).lower()
    finally:
        engine.close()
