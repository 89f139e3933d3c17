"""Parsing in a separate process: progress and chunks come back, and a parse past its time or memory limit is killed."""

from __future__ import annotations

import asyncio

import psutil
import pytest
from schulki.retrieval.parse_process import ParseLimits, parse_in_process
from schulki.runtime.errors import InvalidInput, TooLarge

from tests.security.data_support import big_shared_strings_xlsx, single_line_text


def limits(**changes) -> ParseLimits:
    settings = dict(
        memory_bytes=1024 * 1024 * 1024,
        timeout_s=60,
        max_pages=2000,
        max_chars=5_000_000,
        max_chunks=6000,
        chunk_chars=1200,
        overlap_chars=200,
    )
    return ParseLimits(**{**settings, **changes})


def parse(path, name: str, **changes):
    reports: list[tuple[int, int]] = []
    result = asyncio.run(parse_in_process(path, name, limits(**changes), lambda done, total: reports.append((done, total))))
    return result, reports


STANDING: set[int] = set()
"""Children of the test process from before the test: servers the test session runs beside it (the Weaviate server)."""


@pytest.fixture(autouse=True)
def _standing_children() -> None:
    STANDING.clear()
    STANDING.update(p.pid for p in psutil.Process().children(recursive=True))


def no_children() -> bool:
    """No process the test's parse started is left (the session's own servers stand as they were)."""
    return not [p for p in psutil.Process().children(recursive=True) if p.pid not in STANDING]


def test_a_document_comes_back_as_chunks_with_progress(tmp_path):
    path = tmp_path / "upload.md"
    path.write_text("# Vulkane\n\nDer Ätna ist ein Vulkan auf Sizilien.\n\n# Flüsse\n\nDie Elbe fließt durch Dresden.\n", encoding="utf-8")
    result, reports = parse(path, "erdkunde.md")
    assert result.format == "md" and [c.section for c in result.chunks] == ["Vulkane", "Flüsse"]
    assert "Ätna" in result.chunks[0].text and reports == [(1, 1)]
    assert no_children() and not list(tmp_path.glob("*.result.json"))


def test_the_child_s_own_errors_come_back_with_their_kind(tmp_path):
    path = tmp_path / "upload.txt"
    path.write_bytes(b"")
    with pytest.raises(InvalidInput, match="leer"):
        parse(path, "leer.txt")
    path.write_bytes(single_line_text(1))
    with pytest.raises(TooLarge, match="zu viel Text"):
        parse(path, "zeile.txt", max_chars=100_000)
    path.write_text("Ein Satz. " * 2000)
    with pytest.raises(TooLarge, match="Abschnitte"):
        parse(path, "viele.txt", max_chunks=3)


def test_a_parse_past_its_time_limit_is_killed(tmp_path):
    path = tmp_path / "upload.txt"
    # 12 MB on one line take the chunker seconds (4 MB: 0.7 s), the child's start 0.15 s: the limit ends it mid-way.
    path.write_bytes(single_line_text(12))
    with pytest.raises(TooLarge, match=r"dauerte länger als 0\.2 s"):
        parse(path, "lang.txt", timeout_s=0.2, max_chars=20_000_000, max_chunks=100_000)
    assert no_children()


def test_a_parse_past_its_memory_limit_dies_alone(tmp_path):
    path = tmp_path / "upload.xlsx"
    path.write_bytes(big_shared_strings_xlsx(120_000_000))  # twice what fits in 200 MiB beside the parser
    with pytest.raises(TooLarge, match="mehr als 200 MiB Speicher"):
        parse(path, "gross.xlsx", memory_bytes=200 * 1024 * 1024)
    assert no_children()
