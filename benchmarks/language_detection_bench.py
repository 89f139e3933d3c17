"""How often Whisper's language detection is right on short school clips, alone and weighted toward the school's language.

Short sentences in German, English and French are spoken by espeak-ng (140 words a
minute) into clips of 1 to 7 seconds. For each clip Whisper's detection
(``WhisperModel.detect_language``) gives a probability per language; the table
shows, per language and clip length, how many clips are detected correctly by
Whisper alone and with the school's default language weighted by each weight
(the rule of ``transcription.default_language_weight``). This is how the
default weight was chosen.

    .venv/bin/python benchmarks/language_detection_bench.py
    .venv/bin/python benchmarks/language_detection_bench.py --weights 1 5 10 20 --default de
    .venv/bin/python benchmarks/language_detection_bench.py --smoke    # one clip per language and length: does it still run?
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from schulki.models.defaults import speech_model_path  # noqa: E402

from benchmarks.smoke import parse_args  # noqa: E402

SHORT = {
    "de": [
        "Guten Morgen.",
        "Hallo zusammen.",
        "Wir lesen heute ein Buch.",
        "Die Hausaufgaben sind fertig.",
        "Mein Name ist Anna.",
        "Ich habe eine Frage.",
        "Heute scheint die Sonne.",
        "Das ist mein Referat über die Römer.",
        "Kannst du mir helfen?",
        "Morgen schreiben wir eine Klassenarbeit.",
        "Die Bienen im Schulgarten sind fleißig.",
        "Der Wasserkreislauf ist spannend.",
    ],
    "en": [
        "Good morning.",
        "Hello everyone.",
        "We read a book today.",
        "The homework is finished.",
        "My name is Anna.",
        "I have a question.",
        "The sun is shining today.",
        "Can you help me?",
    ],
    "fr": [
        "Bonjour à tous.",
        "Nous lisons un livre aujourd'hui.",
        "J'ai une question.",
        "Le soleil brille aujourd'hui.",
        "Pouvez-vous m'aider?",
        "Je m'appelle Anna.",
    ],
}
LONG = {
    "de": [
        "Heute lernen wir im Unterricht, wie der Wasserkreislauf funktioniert und warum es regnet.",
        "Die Bienen im Schulgarten sammeln Nektar, und im Sommer ernten wir den Honig zusammen mit der Klasse.",
        "Kannst du mir bitte erklären, wie man Brüche addiert? Ich verstehe die Aufgabe nicht.",
        "Morgen fahren wir mit dem Bus in das Museum, und jeder bringt ein Pausenbrot mit.",
    ],
    "en": [
        "Today we are learning in class how the water cycle works and why it rains.",
        "The bees in the school garden collect nectar, and in summer we harvest the honey together.",
        "Can you please explain how to add fractions? I do not understand the exercise.",
        "Tomorrow we are going to the museum by bus, and everyone brings a sandwich.",
    ],
    "fr": [
        "Aujourd'hui nous apprenons en classe comment fonctionne le cycle de l'eau et pourquoi il pleut.",
        "Demain nous allons au musée en bus, et chacun apporte un sandwich.",
    ],
}


def weighted(probabilities: dict[str, float], default: str, weight: float) -> str:
    """The same rule as the transcription engine: the default language unless another is more than `weight` times as likely."""
    detected = max(probabilities, key=probabilities.__getitem__)
    if detected != default and probabilities.get(default, 0.0) * weight >= probabilities[detected]:
        return default
    return detected


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--default", default="de", help="the school's default language")
    parser.add_argument("--weights", type=float, nargs="+", default=[5.0, 10.0, 20.0])
    parser.add_argument("--clips", type=int, default=None, help="at most this many clips per language and length (default: all)")
    args = parse_args(parser, clips=1)

    from faster_whisper import WhisperModel
    from faster_whisper.audio import decode_audio

    model = WhisperModel(str(speech_model_path()), device="cpu", compute_type="int8")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        clip = Path(folder) / "clip.wav"
        for length, sets in (("1-3 s", SHORT), ("4-7 s", LONG)):
            for language, sentences in sets.items():
                for sentence in sentences[: args.clips]:
                    subprocess.run(["espeak-ng", "-v", language, "-s", "140", "-w", str(clip), sentence], check=True)
                    samples = decode_audio(str(clip))
                    _, _, all_probabilities = model.detect_language(samples)
                    rows.append((length, language, samples.size / 16000, dict(all_probabilities)))
    print(f"{'clips':<6} {'lang':<5} {'n':>3} {'Whisper alone':>14} " + " ".join(f"{'weight ' + format(w, 'g'):>10}" for w in args.weights))
    for length in ("1-3 s", "4-7 s"):
        for language in SHORT:
            group = [r for r in rows if r[0] == length and r[1] == language]
            alone = sum(max(p, key=p.__getitem__) == language for *_, p in group)
            cells = [sum(weighted(p, args.default, w) == language for *_, p in group) for w in args.weights]
            print(f"{length:<6} {language:<5} {len(group):>3} {alone:>14} " + " ".join(f"{c:>10}" for c in cells))


if __name__ == "__main__":
    main()
