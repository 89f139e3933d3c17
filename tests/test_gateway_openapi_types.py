"""Every /v1 route's answer is typed in the OpenAPI document at /v1/openapi.json: a client generator gets a model for each.

The document is read from a real app (``create_app``); nothing is served. A
response schema counts as typed when it names a model with fields (through
``$ref``, or each alternative of an ``anyOf``/``oneOf``), or, for a file or
text answer, a string; a bare ``object`` (a dict) or an empty schema does not.
"""

from __future__ import annotations

from typing import Any

import pytest
from schulki.config import Config
from schulki.gateway.api.openapi import v1_document
from schulki.gateway.app import create_app


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return v1_document(create_app(Config(data_dir=tmp_path_factory.mktemp("gateway"))))


def _typed(schema: dict[str, Any], components: dict[str, Any]) -> bool:
    if "$ref" in schema:
        return _typed(components[schema["$ref"].rsplit("/", 1)[1]], components)
    for choice in ("anyOf", "oneOf"):
        if choice in schema:
            return all(_typed(alternative, components) for alternative in schema[choice])
    if schema.get("type") == "string":
        return True
    return schema.get("type") == "object" and bool(schema.get("properties"))


def test_every_v1_route_has_a_typed_answer(document):
    components = document["components"]["schemas"]
    routes = [(path, method, operation) for path, item in document["paths"].items() for method, operation in item.items()]
    assert len(routes) >= 18
    untyped = []
    for path, method, operation in routes:
        content = operation["responses"].get("200", {}).get("content", {})
        if not content or not all(_typed(media.get("schema", {}), components) for media in content.values()):
            untyped.append(f"{method.upper()} {path}")
    assert untyped == []


def test_streaming_routes_list_their_events(document):
    for path in ("/v1/chat/completions", "/v1/documents/summarize", "/v1/documents/translate"):
        assert "text/event-stream" in document["paths"][path]["post"]["responses"]["200"]["content"], path
    chunk = document["components"]["schemas"]["ChatCompletionChunk"]
    assert {"id", "object", "created", "model", "choices", "usage"} <= set(chunk["properties"])


def test_every_v1_json_body_is_typed(document):
    components = document["components"]["schemas"]
    bodies = {
        f"{method.upper()} {path}": operation["requestBody"]["content"]["application/json"]["schema"]
        for path, item in document["paths"].items()
        for method, operation in item.items()
        if "application/json" in operation.get("requestBody", {}).get("content", {})
    }
    # the three vector store bodies were read by hand before; now they are models like the rest
    assert {
        "POST /v1/vector_stores",
        "POST /v1/vector_stores/{vector_store_id}/files",
        "POST /v1/vector_stores/{vector_store_id}/search",
    } <= set(bodies)
    assert [name for name, schema in bodies.items() if not _typed(schema, components)] == []
