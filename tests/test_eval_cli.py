"""`schulki eval` as an admin runs it: table, stored JSON, progress, Ctrl-C, clear errors; and the run's cancel event."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

import pytest
from schulki.evaluation.perplexity import EvalCancelled
from schulki.evaluation.runner import EvalOptions, evaluate

from tests.conftest import free_port
from tests.eval_support import THREADS, default_model


def eval_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "schulki.cli", "eval", *args]


def quiet_env() -> dict[str, str]:
    # no inference service answers at this port, so the busy check lets the run start
    return {**os.environ, "SCHULKI_INFERENCE__PORT": str(free_port())}


def test_schulki_eval_prints_the_table_and_stores_json_per_host_and_file(tmp_path):
    run = subprocess.run(
        eval_command(
            str(default_model()),
            "--context",
            "256",
            "--windows",
            "2",
            "--questions",
            "dev",
            "--max-questions",
            "4",
            "--threads",
            str(THREADS),
            "--results",
            str(tmp_path),
            "--host",
            "lab-pc",
            "--no-nice",
        ),
        capture_output=True,
        text=True,
        env=quiet_env(),
        timeout=600,
    )
    assert run.returncode == 0, run.stderr
    assert "perplexity 2/2" in run.stderr and "questions 4/4" in run.stderr  # progress
    header, _rule, line = run.stdout.splitlines()[:3]
    assert header.split()[:4] == ["host", "file", "quant", "size"] and "Q4_K_M" in line and "Referenz" in line
    stored = tmp_path / "lab-pc" / f"{default_model().name}.json"
    record = json.loads(stored.read_text())
    assert record["host"] == "lab-pc" and record["node_kind"] == "cpu" and record["quant"] == "Q4_K_M"
    assert record["perplexity"] > 1 and record["text"]["windows"] == 2 and record["text"]["context"] == 256
    assert record["questions"]["total"] == 4 and set(record["questions"]["by_split"]) == {"dev"}
    assert record["speed"]["prompt_tokens_per_s"] > 0 and record["speed"]["generation_tokens_per_s"] > 0
    assert record["memory"]["weights"] > 200 * 2**20 and record["memory"]["total"] > record["memory"]["weights"]


def test_ctrl_c_cancels_and_stores_nothing(tmp_path):
    # Ctrl-C in a terminal. A test run started in the background has SIGINT ignored, the eval would inherit that, and a
    # Python started so never turns SIGINT into KeyboardInterrupt: it would measure to the end. A handler (unlike
    # "ignore") is not inherited, so the eval starts with SIGINT as in a terminal.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        process = subprocess.Popen(
            eval_command(
                str(default_model()), "--context", "256", "--threads", str(THREADS), "--results", str(tmp_path), "--no-speed", "--no-nice"
            ),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=quiet_env(),
        )
    finally:
        signal.signal(signal.SIGINT, previous)
    deadline = time.monotonic() + 120
    seen = ""
    while "perplexity" not in seen and time.monotonic() < deadline:  # wait until it is measuring
        seen += process.stderr.read(1)
    process.send_signal(signal.SIGINT)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 130, seen + err
    assert "abgebrochen" in err and not any(tmp_path.rglob("*.json"))


def test_the_cancel_event_stops_a_run_between_windows():
    cancel = threading.Event()
    steps = []

    def progress(file_name, step, done, total):
        steps.append((step, done))
        cancel.set()

    with pytest.raises(EvalCancelled):
        evaluate([default_model()], EvalOptions(context=256, threads=THREADS, speed=False), progress=progress, cancel=cancel)
    assert steps == [("perplexity", 1)]


def test_bad_files_get_one_clear_line(tmp_path):
    not_gguf = tmp_path / "modell.gguf"
    not_gguf.write_text("kein Modell")
    for path, message in ((tmp_path / "fehlt.gguf", "not found"), (not_gguf, "not a GGUF")):
        run = subprocess.run(eval_command(str(path)), capture_output=True, text=True, env=quiet_env(), timeout=60)
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr
        assert "nice 19" in run.stderr  # by default at the lowest priority: a serving node's chats go first
    run = subprocess.run(
        eval_command(str(default_model()), str(default_model())), capture_output=True, text=True, env=quiet_env(), timeout=60
    )
    assert run.returncode == 2 and "doppelt" in run.stderr
