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
    for path in ("/v1/chat/completions", "/v1/completions", "/v1/infill", "/v1/documents/summarize", "/v1/documents/translate"):
        assert "text/event-stream" in document["paths"][path]["post"]["responses"]["200"]["content"], path
    chunk = document["components"]["schemas"]["ChatCompletionChunk"]
    assert {"id", "object", "created", "model", "choices", "usage"} <= set(chunk["properties"])


def test_every_v1_request_body_is_typed(document):
    components = document["components"]["schemas"]
    posts = {f"POST {path}": item["post"] for path, item in document["paths"].items() if "post" in item}
    assert len(posts) >= 9
    untyped = [
        name
        for name, operation in posts.items()
        if not operation.get("requestBody", {}).get("content")
        or not all(_typed(media.get("schema", {}), components) for media in operation["requestBody"]["content"].values())
    ]
    assert untyped == []
    # the three vector store bodies were read by hand, the two uploads are multipart forms
    for path in ("/v1/vector_stores", "/v1/vector_stores/{vector_store_id}/files", "/v1/vector_stores/{vector_store_id}/search"):
        assert "application/json" in posts[f"POST {path}"]["requestBody"]["content"], path
    for path in ("/v1/files", "/v1/audio/transcriptions"):
        schema = posts[f"POST {path}"]["requestBody"]["content"]["multipart/form-data"]["schema"]
        assert components[schema["$ref"].rsplit("/", 1)[1]]["properties"]["file"]["format"] == "binary", path
