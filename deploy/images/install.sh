#!/bin/sh
# Install one schulki service into a virtual environment: the step every image runs,
# and the same command the tests run outside Docker.
#
#   deploy/images/install.sh EXTRA VENV [--dry-run]
#
# EXTRA is the service's extra of pyproject.toml (inference, embeddings, transcription,
# retrieval, gateway); only it is installed, with the exact versions of constraints.txt.
# SCHULKI_VARIANT=cuda builds llama-cpp-python with CUDA (the inference and embeddings
# images on GPU nodes); CTranslate2's wheels carry CUDA already.
set -eu

extra=${1:?usage: install.sh EXTRA VENV [--dry-run]}
venv=${2:?usage: install.sh EXTRA VENV [--dry-run]}
dry_run=${3:-}
variant=${SCHULKI_VARIANT:-cpu}
src=$(cd "$(dirname "$0")/../.." && pwd)

case "$extra" in
  inference|embeddings|transcription|retrieval|gateway) ;;
  *) echo "install.sh: unknown extra '$extra'" >&2; exit 2 ;;
esac
case "$variant" in
  cpu) ;;
  cuda) CMAKE_ARGS="-DGGML_CUDA=on"; export CMAKE_ARGS ;;
  *) echo "install.sh: SCHULKI_VARIANT must be cpu or cuda, not '$variant'" >&2; exit 2 ;;
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
echo "install.sh: schulki[$extra] ($variant) installed into $venv"
