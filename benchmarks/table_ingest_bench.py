"""Tables: ingest time and chunk count of a large CSV (default 5,000 rows) through the retrieval service.

The CSV is made here (a German school's marks list: semicolon separated,
seven columns, a header row). It goes through the real retrieval service with
the real embeddings service (default model), both on real sockets in this
process; the time of each stage comes from the service's own progress
messages. Prints the chunk count, the characters stored, the time per stage
and in all, and whether every chunk still names its columns (the header is
kept with every chunk).

    .venv/bin/python benchmarks/table_ingest_bench.py [--rows 5000]
    .venv/bin/python benchmarks/table_ingest_bench.py --smoke    # 100 rows: does it still run?
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.retrieval_bench import timed_ingest  # noqa: E402
from benchmarks.smoke import parse_args  # noqa: E402

HEADER = ["Name", "Klasse", "Fach", "Note", "Punkte", "Fehlstunden", "Bemerkung"]
NAMES = ["Anna", "Ben", "Carla", "David", "Emil", "Fatma", "Greta", "Hasan", "Ida", "Jonas", "Lea", "Mehmet", "Nora", "Olga"]
SUBJECTS = ["Mathematik", "Deutsch", "Englisch", "Biologie", "Physik", "Geschichte", "Kunst", "Sport"]
REMARKS = ["", "arbeitet gut mit", "Hausaufgaben fehlen oft", "sehr sorgfältig", "Referat über Vulkane"]


def marks_csv(rows: int, rng: random.Random) -> bytes:
    lines = [";".join(HEADER)]
    for i in range(rows):
        cells = [
            f"{rng.choice(NAMES)} {i}",
            f"{rng.randint(5, 10)}{rng.choice('abc')}",
            rng.choice(SUBJECTS),
            str(rng.randint(1, 6)),
            str(rng.randint(0, 15)),
            str(rng.randint(0, 40)),
            rng.choice(REMARKS),
        ]
        lines.append(";".join(cells))
    return ("\n".join(lines) + "\n").encode()


def bench(rows: int) -> None:
    data = marks_csv(rows, random.Random(1))
    load = os.getloadavg()[0]
    document, spans, total, exported = timed_ingest("noten.csv", data, export=True)
    assert exported is not None  # asked for with export=True
    with_header = sum(1 for c in exported.chunks if all(f"{name}:" in c.text for name in HEADER[:6]))
    print(f"CSV: {rows} rows, {len(data) / 1024:.0f} KiB; load {load:.2f} at the start of ingest")
    print(f"chunks: {document.chunk_count}, text stored: {document.text_bytes / 1024:.0f} KiB")
    print(f"chunks naming all six always-filled columns: {with_header} of {len(exported.chunks)}")
    for stage, seconds in spans.items():
        print(f"  {stage:10s} {seconds:7.1f} s")
    print(f"ingest in all: {total:.1f} s ({rows / total:.0f} rows/s)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=5000, help="data rows of the CSV")
    args = parse_args(parser, rows=100)
    bench(args.rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
