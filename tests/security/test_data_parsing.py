"""Attacks on what one upload can cost the retrieval service: files that expand, nest, run long or eat memory.

The retrieval service runs as its own process (``schulki serve retrieval``, its
address space capped so a working attack cannot take the machine), with the
real embeddings service and the real embedded store. Every hostile file must
get a clear status within its deadline, leave no parse process behind, and
the service must keep serving: health SERVING and an ordinary document still
ingested and found.
"""

from __future__ import annotations

import time

import grpc
import pytest
from schulki.retrieval.v1 import retrieval_service_pb2 as pb
from schulki.retrieval.v1 import retrieval_service_pb2_grpc as pb_grpc

from tests.retrieval_support import assert_serving, ingest, requests, search
from tests.security.data_support import (
    big_shared_strings_xlsx,
    huge_shared_string_xlsx,
    nested_html,
    retrieval_process,
    single_line_text,
    wide_header_csv,
    wide_table_docx,
)

DEADLINE_S = 90
"""Each hostile upload must be answered within this; today's code spends hours (or all memory) on them."""
MAX_CHARS = 300_000
PARSE_MEMORY_MB = 256


@pytest.fixture(scope="module")
def service(tmp_path_factory, embeddings_address):
    with retrieval_process(
        tmp_path_factory.mktemp("attacked"),
        embeddings_address,
        max_document_chars=str(MAX_CHARS),
        parse_memory_mb=str(PARSE_MEMORY_MB),
        parse_timeout_s="60",
    ) as running:
        yield running


@pytest.fixture(scope="module")
def stub(service):
    with grpc.insecure_channel(service.address) as channel:
        stub = pb_grpc.RetrievalServiceStub(channel)
        stub.CreateWorkspace(pb.CreateWorkspaceRequest(workspace="u-1"), timeout=30)
        yield stub


def attack(stub, service, file_name: str, data: bytes) -> grpc.RpcError:
    """Upload a hostile file; return the error it got, after checking that the service is unharmed."""
    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        for _ in stub.IngestDocument(requests("u-1", file_name, data), timeout=DEADLINE_S):
            pass
    elapsed = time.monotonic() - started
    assert caught.value.code() != grpc.StatusCode.DEADLINE_EXCEEDED, f"{file_name}: no answer within {DEADLINE_S} s"
    assert service.process.poll() is None, "the retrieval service died"
    assert not service.children(), "a parse process was left running"
    with grpc.insecure_channel(service.address) as channel:
        assert_serving(channel)
    print(f"{file_name}: {len(data)} bytes refused in {elapsed:.1f} s: {caught.value.code().name}")
    return caught.value


def test_a_wide_header_csv_is_stopped_before_it_expands(stub, service):
    """Attack: a 3 MB CSV whose 100-character headers, repeated in every cell, make 150 million characters."""
    error = attack(stub, service, "liste.csv", wide_header_csv())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "zu viel Text" in error.details() and f"{MAX_CHARS:,}".replace(",", ".") in error.details()


def test_an_xlsx_whose_cells_share_one_huge_string_is_stopped(stub, service):
    """Attack: an XLSX with one 2-million-character shared string in all 10,000 cells (20 billion characters expanded)."""
    error = attack(stub, service, "noten.xlsx", huge_shared_string_xlsx())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED


def test_a_docx_table_with_huge_headers_is_stopped(stub, service):
    """Attack: a DOCX table of 50 headers of 20,000 characters over 200 rows (200 million characters expanded)."""
    error = attack(stub, service, "plan.docx", wide_table_docx())
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "zu viel Text" in error.details()


def test_one_huge_line_of_text_is_refused(stub, service):
    """Attack: 20 MB of words on a single line (17,000 chunks to embed)."""
    error = attack(stub, service, "zeile.txt", single_line_text(20))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "zu viel Text" in error.details()


def test_parsing_that_needs_more_memory_than_allowed_is_killed_not_the_service(stub, service):
    """Attack: an XLSX whose 120 MB shared strings table needs more than the parse process's 256 MiB to read (60 MB
    now fit beside the parser and met the text limit instead: a refusal too, but not this one)."""
    error = attack(stub, service, "gross.xlsx", big_shared_strings_xlsx(120_000_000))
    assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "Speicher" in error.details()


def test_the_service_still_ingests_and_finds_an_ordinary_document_after_the_attacks(stub, service):
    """After every attack above, a student's ordinary upload works as before."""
    _, document = ingest(stub, "u-1", "vulkane.txt", "Der Ätna ist ein Vulkan auf Sizilien. Er ist sehr aktiv.".encode())
    hits = search(stub, "u-1", "Vulkan Sizilien")
    assert hits and hits[0].document_id == document.document_id
    assert [d.document_id for d in stub.ListDocuments(pb.ListDocumentsRequest(workspace="u-1"), timeout=30).documents] == [
        document.document_id
    ]


def test_deeply_nested_html_gets_an_answer_and_leaves_the_service_serving(stub, service):
    """Attack: an HTML page of 200,000 nested elements."""
    try:
        for _ in stub.IngestDocument(requests("u-1", "tief.html", nested_html()), timeout=DEADLINE_S):
            pass
    except grpc.RpcError as error:
        assert error.code() in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.RESOURCE_EXHAUSTED), error
    assert service.process.poll() is None and not service.children()
    with grpc.insecure_channel(service.address) as channel:
        assert_serving(channel)
