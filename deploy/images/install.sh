#!/bin/sh
# Install one schulki service into a virtual environment: the step every image runs,
# and the same command the tests run outside Docker.
#
#   deploy/images/install.sh EXTRA VENV [--dry-run]
#   deploy/images/install.sh --print-cmake-args     the llama.cpp build flags, and nothing else
#
# EXTRA is the service's extra of pyproject.toml (inference, embeddings, transcription,
# retrieval, gateway); only it is installed, with the exact versions of constraints.txt.
# SCHULKI_VARIANT=cuda builds llama-cpp-python with CUDA (the inference and embeddings
# images on GPU nodes); CTranslate2's wheels carry CUDA already.
#
# llama.cpp is never built for the build machine (GGML_NATIVE=OFF): a docker build has no
# GPU, so CUDA's "native" architectures stop CMake, and -march=native would give a lab PC
# older than the build machine an illegal instruction. Instead:
#   SCHULKI_CPU_LEVEL          x86-64-v3 (default: AVX2, FMA, F16C; Intel 2013+, AMD 2015+)
#                              or x86-64-v2 (SSE4.2 only, for older PCs; slower)
#   SCHULKI_CUDA_ARCHITECTURES the GPUs the CUDA image runs on (default: Turing, Ampere,
#                              Ada and Hopper as device code, plus PTX for newer cards)
# llama.cpp's own images build every CPU variant as a loadable backend (GGML_BACKEND_DL),
# but llama-cpp-python never calls ggml_backend_load_all, so such a build loads no backend.
set -eu

usage="usage: install.sh EXTRA VENV [--dry-run] | install.sh --print-cmake-args"
variant=${SCHULKI_VARIANT:-cpu}
cpu_level=${SCHULKI_CPU_LEVEL:-x86-64-v3}
cuda_architectures=${SCHULKI_CUDA_ARCHITECTURES:-75-real;80-real;86-real;89-real;90}

case "$cpu_level" in
  x86-64-v3) cpu_flags="-DGGML_SSE42=ON -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_BMI2=ON -DGGML_FMA=ON -DGGML_F16C=ON" ;;
  x86-64-v2) cpu_flags="-DGGML_SSE42=ON -DGGML_AVX=OFF -DGGML_AVX2=OFF -DGGML_BMI2=OFF -DGGML_FMA=OFF -DGGML_F16C=OFF" ;;
  *) echo "install.sh: SCHULKI_CPU_LEVEL must be x86-64-v3 or x86-64-v2, not '$cpu_level'" >&2; exit 2 ;;
esac
# Nothing newer than the level, whatever the build machine has.
cpu_flags="-DGGML_NATIVE=OFF $cpu_flags -DGGML_AVX_VNNI=OFF -DGGML_AVX512=OFF -DGGML_AVX512_VBMI=OFF -DGGML_AVX512_VNNI=OFF -DGGML_AVX512_BF16=OFF -DGGML_AMX_TILE=OFF -DGGML_AMX_INT8=OFF -DGGML_AMX_BF16=OFF"
case "$variant" in
  cpu) CMAKE_ARGS="$cpu_flags" ;;
  cuda)
    case "$cuda_architectures" in
      *native*|"") echo "install.sh: SCHULKI_CUDA_ARCHITECTURES must name the architectures (an image build has no GPU to ask)" >&2; exit 2 ;;
    esac
    # The driver's libcuda.so.1 is not in the build image (only its stub); it comes with the node's driver.
    CMAKE_ARGS="$cpu_flags -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=$cuda_architectures -DCMAKE_EXE_LINKER_FLAGS=-Wl,--allow-shlib-undefined" ;;
  *) echo "install.sh: SCHULKI_VARIANT must be cpu or cuda, not '$variant'" >&2; exit 2 ;;
esac
export CMAKE_ARGS
if [ "${1:-}" = "--print-cmake-args" ]; then
  echo "$CMAKE_ARGS"
  exit 0
fi

extra=${1:?$usage}
venv=${2:?$usage}
dry_run=${3:-}
src=$(cd "$(dirname "$0")/../.." && pwd)

case "$extra" in
  inference|embeddings|transcription|retrieval|gateway) ;;
  *) echo "install.sh: unknown extra '$extra'" >&2; exit 2 ;;
esac

flags="-c $src/constraints.txt"
if [ "$dry_run" = "--dry-run" ]; then
  # Resolve every package against the constraints for the target environment, building and
  # installing nothing (an empty venv, and this Python's pip pointed at it, is enough).
  python3 -m venv --without-pip "$venv"
  exec python3 -m pip --disable-pip-version-check --no-input --python "$venv/bin/python" \
    install $flags --dry-run --ignore-installed "$src[$extra]"
fi

python3 -m venv "$venv"
pip="$venv/bin/python -m pip --disable-pip-version-check --no-input"

# The gRPC code is generated from proto/ (it is not committed): a build tool only, so it
# goes into a throwaway environment, not into the image.
if [ ! -f "$src/services/schulki/inference/v1/inference_service_pb2.py" ]; then
  python3 -m venv /tmp/schulki-codegen
  /tmp/schulki-codegen/bin/python -m pip install --quiet $flags grpcio-tools
  PYTHONPATH="$src/services" /tmp/schulki-codegen/bin/python -m schulki.codegen
  rm -rf /tmp/schulki-codegen
fi

$pip install --quiet $flags "$src[$extra]"
if [ "$extra" = retrieval ]; then
  # weaviate-client pins older grpcio and protobuf than schulki's but works with them.
  $pip install --quiet $flags --no-deps weaviate-client==4.24.1
fi
"$venv/bin/python" -c "import schulki.$extra" 2>/dev/null || "$venv/bin/python" -c "import schulki"
echo "install.sh: schulki[$extra] ($variant, $cpu_level) installed into $venv"
