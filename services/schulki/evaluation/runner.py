"""One ``schulki eval`` run: the files in order of precision, each measured once, with progress and cancel.

The highest-precision file goes first: its pass gives its perplexity and
stores the log-probabilities every other file is compared with (KL
divergence). Each file is loaded once, measured (perplexity and KLD, the
question set, speed) and closed before the next, so only one model is in
memory at a time.

On a serving node the run must not stall the students' chats. schulki's
decision: it runs at the lowest CPU priority (nice 19), so the inference
service's threads go first, and it refuses to start while the inference
service on this machine has requests waiting (its queue, from GetModelInfo),
unless the admin passes --force. On a GPU node the model also needs its own
GPU memory next to the served one, so run it outside lessons there.
"""

from __future__ import annotations

import datetime as dt
import os
import tempfile
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from schulki.evaluation import data
from schulki.evaluation.choice import Accuracy, score_questions
from schulki.evaluation.model import EvalError, EvalModel
from schulki.evaluation.perplexity import Stats, compare_pass, reference_pass, text_windows
from schulki.evaluation.report import BITS_PER_WEIGHT
from schulki.evaluation.results import SCHEMA, this_host
from schulki.evaluation.speed import Speed, measure_speed

if TYPE_CHECKING:
    from schulki.config import RuntimeConfig

Report = Callable[[str, str, int, int], None]
"""progress(file name, step, done, total)."""


@dataclass
class EvalOptions:
    """What one run measures, and how."""

    context: int = 512
    """Tokens per perplexity window (llama-perplexity's -c)."""
    windows: int | None = None
    """Most windows of the text; None means as many as the text fills."""
    text_file: Path | None = None
    """A reference text of the admin's own; None means the shipped German text."""
    questions_file: Path | None = None
    """A question file of the admin's own; None means the shipped set."""
    questions_split: str = "all"
    """all, dev or heldout."""
    question_limit: int | None = None
    """Most questions (the first ones of the split); None means all; 0 skips the question set."""
    speed: bool = True
    prompt_tokens: int = 256
    generate_tokens: int = 32
    threads: int | None = None
    gpu_layers: int = -1
    reference: Path | None = None
    """The file the others are compared with; None means the highest-precision file given."""
    host: str | None = None
    work_dir: Path | None = None
    """Where the reference's log-probabilities are kept during the run (deleted after); None means the system's temp folder."""


def quant_of(path: Path) -> str:
    """The quant named in a GGUF's header (general.file_type), read without loading the model."""
    from schulki.models.gguf import file_type_name, read_metadata

    return file_type_name(read_metadata(path).get("general.file_type"))


def by_precision(paths: Sequence[Path], reference: Path | None = None) -> list[Path]:
    """The files, highest precision first (bits per weight, then file size); the given reference always first."""

    def key(path: Path) -> tuple[float, int]:
        return (BITS_PER_WEIGHT.get(quant_of(path), 0.0), path.stat().st_size)

    ordered = sorted(paths, key=key, reverse=True)
    if reference is not None:
        ref = Path(reference).resolve()
        ordered = [p for p in ordered if Path(p).resolve() == ref] + [p for p in ordered if Path(p).resolve() != ref]
        if Path(ordered[0]).resolve() != ref:
            raise EvalError(f"the reference {reference} is not one of the files given")
    return ordered


def check_files(paths: Sequence[Path]) -> list[Path]:
    """Refuse missing, duplicate or non-GGUF files before anything is loaded."""
    from schulki.models.gguf import check_gguf_file

    if not paths:
        raise EvalError("Keine Modelldatei angegeben (no model file given)")
    checked: list[Path] = []
    for path in paths:
        try:
            check_gguf_file(Path(path))
        except ValueError as error:
            raise EvalError(str(error)) from None
        if any(Path(path).resolve() == p.resolve() for p in checked):
            raise EvalError(f"Datei doppelt angegeben (file given twice): {path}")
        checked.append(Path(path))
    return checked


def lower_priority() -> int:
    """Run this process at the lowest CPU priority so the services' threads go first; returns the new niceness."""
    try:
        return os.nice(19 - os.nice(0))
    except OSError:  # not allowed to change it: run as we are
        return os.nice(0)


def inference_queue(address: str, runtime: RuntimeConfig | None = None, timeout: float = 2.0) -> int | None:
    """Requests waiting at the inference service at address (called with runtime's token), or None when none answers there."""
    import grpc

    from schulki.config import Config
    from schulki.inference.v1 import inference_service_pb2 as pb
    from schulki.inference.v1 import inference_service_pb2_grpc as pb_grpc
    from schulki.runtime.client import call_metadata, open_channel

    runtime = runtime or Config().runtime
    with open_channel(address, runtime) as channel:
        try:
            info = pb_grpc.InferenceServiceStub(channel).GetModelInfo(
                pb.GetModelInfoRequest(), timeout=timeout, metadata=call_metadata(runtime)
            )
        except grpc.RpcError:
            return None
    return info.queue_length


def _record(
    model: EvalModel,
    path: Path,
    options: EvalOptions,
    stats: Stats,
    text: data.ReferenceText,
    windows: np.ndarray,
    reference: Path,
    accuracy: Accuracy | None,
    speed: Speed | None,
) -> dict:
    from schulki.runtime.llama_adapter import version

    device = model.device()
    buffers = model.buffers
    is_reference = Path(path).resolve() == Path(reference).resolve()
    return {
        "schema": SCHEMA,
        "host": options.host or this_host(),
        "node_kind": device.kind,
        "device": device.name,
        "measured_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "llama_cpp_python": version(),
        "file": Path(path).name,
        "path": str(Path(path).resolve()),
        "size_bytes": Path(path).stat().st_size,
        "quant": model.quant,
        "model_name": model.name,
        "n_vocab": model.n_vocab,
        "reference_file": Path(reference).name,
        "is_reference": is_reference,
        "text": {
            "name": text.name,
            "sha256": text.sha256,
            "context": int(windows.shape[1]),
            "windows": int(windows.shape[0]),
            "tokens_scored": stats.count,
        },
        "perplexity": stats.perplexity,
        "perplexity_error": stats.perplexity_error,
        "mean_kld": 0.0 if is_reference else stats.mean_kld,
        "mean_kld_error": 0.0 if is_reference else stats.mean_kld_error,
        "same_top_percent": 100.0 if is_reference else stats.same_top_percent,
        "questions": accuracy.as_dict() if accuracy is not None else None,
        "speed": dict(speed.as_dict(), threads=options.threads, gpu_layers=options.gpu_layers) if speed is not None else None,
        "memory": {
            "weights": buffers.weights,
            "kv_cache": buffers.kv_cache,
            "compute": buffers.compute,
            "output": buffers.output,
            "total": buffers.total,
            "context": options.context,
        },
    }


def evaluate(
    paths: Sequence[Path], options: EvalOptions | None = None, progress: Report | None = None, cancel: threading.Event | None = None
) -> list[dict]:
    """Measure every file; return one record per file, reference first. Raises EvalCancelled when cancelled."""
    options = options or EvalOptions()
    ordered = by_precision(check_files(paths), options.reference)
    reference = ordered[0]
    text = data.reference_text(options.text_file)
    questions = data.questions(options.questions_split, options.questions_file)
    if options.question_limit is not None:
        questions = questions[: options.question_limit]

    def step(path: Path, name: str) -> Callable[[int, int], None] | None:
        return (lambda done, total: progress(path.name, name, done, total)) if progress else None

    records = []
    with tempfile.TemporaryDirectory(prefix="schulki-eval-", dir=options.work_dir) as tmp:
        base_file = Path(tmp) / "reference.logits"
        windows = None
        for path in ordered:
            with EvalModel(path, context=options.context, threads=options.threads, gpu_layers=options.gpu_layers) as model:
                if windows is None:
                    windows = text_windows(model, text.text, options.context, options.windows)
                    stats = reference_pass(model, windows, base_file, step(path, "perplexity"), cancel)
                else:
                    stats = compare_pass(model, base_file, step(path, "perplexity+KLD"), cancel)
                accuracy = score_questions(model, questions, step(path, "questions"), cancel)[0] if questions else None
                speed = None
                if options.speed:
                    if progress:
                        progress(path.name, "speed", 0, 1)
                    speed = measure_speed(model, windows.ravel(), options.prompt_tokens, options.generate_tokens)
                records.append(_record(model, path, options, stats, text, windows, reference, accuracy, speed))
    return records
