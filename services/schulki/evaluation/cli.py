"""``schulki eval FILE [FILE ...]``: measure the quants an admin has, print the table, store the results."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from schulki.config import load_config

EXIT_CANCELLED = 130
EXIT_BUSY = 3


def add_parser(commands: argparse._SubParsersAction) -> None:
    """The ``eval`` subcommand and its options."""
    ev = commands.add_parser("eval", help="measure perplexity, KL divergence, question accuracy and speed of GGUF files of one model")
    ev.add_argument("files", nargs="+", type=Path, help="GGUF files of the same model (for example its Q8_0, Q6_K and Q4_K_M)")
    ev.add_argument("--context", type=int, default=None, help="tokens per perplexity window (default 512, as published tables)")
    ev.add_argument("--windows", type=int, default=None, help="most windows of the text (default: all the text fills)")
    ev.add_argument("--text", type=Path, default=None, help="a reference text of your own (default: the shipped German text)")
    ev.add_argument("--questions", choices=("all", "dev", "heldout"), default="all", help="which part of the question set")
    ev.add_argument("--questions-file", type=Path, default=None, help="questions of your own, one JSON object per line")
    ev.add_argument("--max-questions", type=int, default=None, help="use only the first N questions (0 skips them)")
    ev.add_argument("--no-speed", action="store_true", help="skip the speed measurement")
    ev.add_argument("--threads", type=int, default=None, help="CPU threads (default: the setting, else the physical cores)")
    ev.add_argument("--gpu-layers", type=int, default=None, help="layers on the GPU (-1 all, 0 CPU only)")
    ev.add_argument("--reference", type=Path, default=None, help="the file to compare the others with (default: the highest precision)")
    ev.add_argument("--results", type=Path, default=None, help="folder for the results (default: eval-results beside the first file)")
    ev.add_argument("--host", default=None, help="name to store the results under (default: this machine's host name)")
    ev.add_argument("--force", action="store_true", help="run even while this machine's inference service has requests waiting")
    ev.add_argument("--no-nice", action="store_true", help="keep normal CPU priority (only on a machine that serves no one)")
    ev.add_argument("--json", action="store_true", help="print the records as JSON instead of the table")
    ev.set_defaults(func=run)


def _progress(stream: TextIO) -> Callable[[str, str, int, int], None]:
    state = {"last": 0.0}

    def report(file_name: str, step: str, done: int, total: int) -> None:
        now = time.monotonic()
        if done < total and now - state["last"] < 0.5:
            return
        state["last"] = now
        print(f"\r{file_name}: {step} {done}/{total}\033[K", end="\n" if done >= total else "", file=stream, flush=True)

    return report


def run(args: argparse.Namespace) -> int:
    from schulki.evaluation import report
    from schulki.evaluation.data import DataError
    from schulki.evaluation.model import EvalError
    from schulki.evaluation.perplexity import EvalCancelled
    from schulki.evaluation.results import default_results_dir, save_result
    from schulki.evaluation.runner import EvalOptions, evaluate, inference_queue, lower_priority
    from schulki.runtime.errors import ModelLoadError

    config = load_config()
    settings = config.evaluation
    if not args.force:
        from schulki.runtime.local_token import local_runtime

        waiting = inference_queue(f"127.0.0.1:{config.inference.port}", local_runtime(config))
        if waiting:
            print(
                f"schulki eval: Der Inferenz-Dienst auf diesem Rechner hat gerade {waiting} wartende Anfragen; "
                f"bitte später messen oder --force angeben (the inference service here has {waiting} requests waiting; "
                "measure later or pass --force)",
                file=sys.stderr,
            )
            return EXIT_BUSY
    niceness = os.nice(0) if args.no_nice else lower_priority()
    options = EvalOptions(
        context=args.context or settings.context,
        windows=args.windows,
        text_file=args.text,
        questions_file=args.questions_file,
        questions_split=args.questions,
        question_limit=args.max_questions,
        speed=not args.no_speed,
        threads=args.threads if args.threads is not None else settings.threads,
        gpu_layers=args.gpu_layers if args.gpu_layers is not None else settings.gpu_layers,
        reference=args.reference,
        host=args.host,
    )
    print(
        f"schulki eval: {len(args.files)} file(s), windows of {options.context} tokens, CPU priority nice {niceness}; Ctrl-C cancels",
        file=sys.stderr,
    )
    try:
        records = evaluate(args.files, options, progress=_progress(sys.stderr))
    except KeyboardInterrupt:
        print("\nschulki eval: abgebrochen, nichts gespeichert (cancelled, nothing stored)", file=sys.stderr)
        return EXIT_CANCELLED
    except EvalCancelled:
        print("schulki eval: abgebrochen, nichts gespeichert (cancelled, nothing stored)", file=sys.stderr)
        return EXIT_CANCELLED
    except (EvalError, DataError, ModelLoadError, ValueError) as error:
        print(f"schulki eval: {error}", file=sys.stderr)
        return 2
    results_dir = args.results or settings.results_dir or default_results_dir(args.files[0])
    for record in records:
        save_result(results_dir, record)
    if args.json:
        print(json.dumps(records, indent=2, ensure_ascii=False))
    else:
        print(report.table(records))
        print(f"\nstored in {results_dir}", file=sys.stderr)
    return 0
