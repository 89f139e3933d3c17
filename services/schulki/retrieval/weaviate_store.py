"""The Weaviate store: one multi-tenant collection of chunks, one tenant per workspace.

For schools that outgrow one machine. Two collections, both with
multi-tenancy (tenants created only by us, never automatically):

- ``SchulkiChunk`` (``weaviate_collection``): the chunks, with the vectors we
  supply (no vectorizer module), BM25 over ``text``.
- ``SchulkiChunkDocument``: the manifest, one object per complete document.

A workspace is a tenant of both; it exists when the manifest collection has
it. Weaviate has no transactions, so atomicity comes from the order in
store.py: chunks first, manifest object after, and reads leave out chunks of
documents still being written; ``recover`` deletes chunks without a manifest
object at start-up.

Privacy: the client connects with the API key, ``skip_init_checks`` (the
client's start-up check would otherwise ask pypi.org for its latest version)
and a readiness check of our own. Weaviate's own telemetry is a server
setting: run the server with ``DISABLE_TELEMETRY=true``.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Sequence
from typing import Any, TypeAlias

from schulki.config import RetrievalConfig
from schulki.retrieval.documents import Chunk
from schulki.retrieval.store import CANDIDATES_MIN, Candidate, DocumentRecord, Hit, Store, StoredChunk, fuse, hybrid_weight
from schulki.runtime.errors import StartupError

# weaviate-client's typed WeaviateClient types every property as the union of all Weaviate values; the schema
# here is fixed (text, ints, strings), so the client is used untyped rather than narrowed at every read.
WeaviateClient: TypeAlias = Any

log = logging.getLogger("schulki.retrieval")

DELETE_ROUNDS = 1000
"""delete_many removes at most the server's QUERY_MAXIMUM_RESULTS objects per call; repeat up to this often."""
GROUP_LIMIT = 100_000
"""Most distinct documents per workspace that recover() looks at in one aggregation."""
GERMAN_STOP_WORDS = (
    "aber als am an auch auf aus bei bin bis bist da damit dann das dass dein deine dem den der des dessen die dies diese "
    "dieser dieses doch dort du durch ein eine einem einen einer eines er es euer eure für hat hatte hatten hier ich ihr "
    "ihre im in ist ja kann man mein meine mit muss nach nicht noch nur ob oder ohne sehr sein seine sich sie sind so "
    "über um und uns unser unter vom von vor war waren warum was weil welche welcher welches wenn wer wie wir wird wo "
    "wurde wurden zu zum zur"
).split()
"""Words BM25 leaves out of German questions in Weaviate (retrieval.text_language German), in place of its English list.

Weaviate has no stemmer, so "Vulkan" does not find "Vulkane" as in the embedded store's
BM25; the words every German passage shares ("und", "ein") then decided its ranking of
short passages, and a text about plants came before the page about volcanoes."""


def connect(url: str, api_key: str | None, grpc_port: int) -> WeaviateClient:
    """A connected weaviate-client v4 client, or StartupError with one line for the admin."""
    import weaviate
    from weaviate.classes.init import AdditionalConfig, Auth, Timeout

    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StartupError(f"retrieval.weaviate_url must be http(s)://host[:port], not {url!r}")
    secure = parts.scheme == "https"
    try:
        client = weaviate.connect_to_custom(
            http_host=parts.hostname,
            http_port=parts.port or (443 if secure else 80),
            http_secure=secure,
            grpc_host=parts.hostname,
            grpc_port=grpc_port,
            grpc_secure=secure,
            auth_credentials=Auth.api_key(api_key) if api_key else None,
            additional_config=AdditionalConfig(timeout=Timeout(init=10, query=60, insert=120)),
            skip_init_checks=True,
        )
    except Exception as error:
        raise StartupError(f"cannot connect to Weaviate at {url}: {error}") from None
    if not client.is_ready():
        client.close()
        raise StartupError(f"Weaviate at {url} is not ready")
    return client


class WeaviateStore(Store):
    """Chunks and manifests in Weaviate, a tenant per workspace."""

    def __init__(self, config: RetrievalConfig, client: WeaviateClient | None = None) -> None:
        super().__init__()
        if client is None:
            if not config.weaviate_url:
                raise StartupError("retrieval.store is weaviate but retrieval.weaviate_url is empty")
            key = config.weaviate_api_key.get_secret_value() if config.weaviate_api_key else None
            client = connect(config.weaviate_url, key, config.weaviate_grpc_port)
        self.client = client
        self.fusion = config.fusion
        self.keyword_evidence_min = config.keyword_evidence_min
        self.text_language = config.text_language
        self.chunks_name = config.weaviate_collection
        self.documents_name = f"{config.weaviate_collection}Document"
        self._ensure_collections()

    def _ensure_collections(self) -> None:
        from weaviate.classes.config import Configure, DataType, Property, StopwordsPreset, Tokenization, VectorDistances

        german = self.text_language.lower() in ("german", "deutsch", "de")
        inverted_index = (
            Configure.inverted_index(stopwords_preset=StopwordsPreset.NONE, stopwords_additions=GERMAN_STOP_WORDS) if german else None
        )
        tenancy = Configure.multi_tenancy(enabled=True, auto_tenant_creation=False, auto_tenant_activation=True)
        if not self.client.collections.exists(self.chunks_name):
            self.client.collections.create(
                self.chunks_name,
                multi_tenancy_config=tenancy,
                inverted_index_config=inverted_index,
                vector_config=Configure.Vectors.self_provided(
                    vector_index_config=Configure.VectorIndex.hnsw(distance_metric=VectorDistances.COSINE)
                ),
                properties=[
                    Property(name="text", data_type=DataType.TEXT, tokenization=Tokenization.WORD),
                    Property(name="document_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD, index_searchable=False),
                    Property(name="chunk_index", data_type=DataType.INT),
                    Property(name="page", data_type=DataType.INT),
                    Property(name="section", data_type=DataType.TEXT, index_searchable=False),
                    Property(name="source", data_type=DataType.TEXT, index_searchable=False),
                ],
            )
        if not self.client.collections.exists(self.documents_name):
            self.client.collections.create(
                self.documents_name,
                multi_tenancy_config=tenancy,
                vector_config=Configure.Vectors.self_provided(),
                properties=[
                    Property(name="document_id", data_type=DataType.TEXT, tokenization=Tokenization.FIELD),
                    Property(name="source", data_type=DataType.TEXT, index_searchable=False),
                    Property(name="format", data_type=DataType.TEXT, index_searchable=False),
                    Property(name="chunk_count", data_type=DataType.INT),
                    Property(name="page_count", data_type=DataType.INT),
                    Property(name="size_bytes", data_type=DataType.INT),
                    Property(name="created_at", data_type=DataType.INT),
                    Property(name="text_bytes", data_type=DataType.INT),
                ],
            )
        self._chunks = self.client.collections.get(self.chunks_name)
        self._documents = self.client.collections.get(self.documents_name)
        # Collections made before the quota counted stored text lack the property; adding one is allowed.
        if "text_bytes" not in {prop.name for prop in self._documents.config.get().properties}:
            self._documents.config.add_property(Property(name="text_bytes", data_type=DataType.INT))

    @staticmethod
    def _uuid(*parts: object) -> str:
        from weaviate.util import generate_uuid5

        return str(generate_uuid5("/".join(map(str, parts))))

    # Workspaces and manifest. -----------------------------------------------------------

    def _workspace_names(self) -> list[str]:
        return list(self._documents.tenants.get().keys())

    def _create_workspace(self, workspace: str) -> None:
        from weaviate.classes.tenants import Tenant

        if workspace not in self._chunks.tenants.get():
            self._chunks.tenants.create([Tenant(name=workspace)])
        else:  # chunks of a workspace deleted in a crash must not come back with it
            self._chunks.tenants.remove([workspace])
            self._chunks.tenants.create([Tenant(name=workspace)])
        self._documents.tenants.create([Tenant(name=workspace)])

    def _drop_workspace(self, workspace: str) -> None:
        self._documents.tenants.remove([workspace])
        self._chunks.tenants.remove([workspace])

    def _manifest(self, workspace: str) -> list[DocumentRecord]:
        documents = self._documents.with_tenant(workspace)
        return [
            DocumentRecord(**{k: obj.properties[k] for k in DocumentRecord.__dataclass_fields__ if obj.properties.get(k) is not None})
            for obj in documents.iterator()
        ]

    def _record(self, workspace: str, record: DocumentRecord) -> None:
        from dataclasses import asdict

        self._documents.with_tenant(workspace).data.insert(properties=asdict(record), uuid=self._uuid(workspace, record.document_id))

    def _unrecord(self, workspace: str, document_id: str) -> None:
        self._documents.with_tenant(workspace).data.delete_by_id(self._uuid(workspace, document_id))

    # Chunks. -------------------------------------------------------------------------

    def _write_chunks(self, workspace: str, chunks: list[StoredChunk]) -> None:
        from weaviate.classes.data import DataObject

        objects = [
            DataObject(
                properties={
                    "text": c.chunk.text,
                    "document_id": c.document_id,
                    "chunk_index": c.chunk.index,
                    "page": c.chunk.page,
                    "section": c.chunk.section,
                    "source": c.source,
                },
                vector=list(map(float, c.vector)),
                uuid=self._uuid(workspace, c.document_id, c.chunk.index),
            )
            for c in chunks
        ]
        result = self._chunks.with_tenant(workspace).data.insert_many(objects)
        if result.errors:
            first = next(iter(result.errors.values()))
            raise RuntimeError(f"Weaviate refused {len(result.errors)} of {len(objects)} chunks: {first.message}")

    def _delete_chunks(self, workspace: str, document_ids: Sequence[str]) -> int:
        from weaviate.classes.query import Filter

        if not document_ids:
            return 0
        chunks = self._chunks.with_tenant(workspace)
        deleted = 0
        for _ in range(DELETE_ROUNDS):
            result = chunks.data.delete_many(where=Filter.by_property("document_id").contains_any(list(document_ids)))
            deleted += result.successful
            if result.matches == 0 or result.successful == 0:
                break
        return deleted

    def _document_chunks(self, workspace: str, document_id: str) -> list[Chunk]:
        from weaviate.classes.query import Filter

        chunks = self._chunks.with_tenant(workspace)
        found: list[Chunk] = []
        page = 1000  # below Weaviate's QUERY_MAXIMUM_RESULTS (10,000) for offset + limit
        while True:
            response = chunks.query.fetch_objects(
                filters=Filter.by_property("document_id").equal(document_id), limit=page, offset=len(found)
            )
            found += [
                Chunk(
                    text=o.properties["text"],
                    index=int(o.properties["chunk_index"]),
                    page=int(o.properties["page"] or 0),
                    section=o.properties["section"] or "",
                )
                for o in response.objects
            ]
            if len(response.objects) < page:
                return found

    def _chunk_document_ids(self, workspace: str) -> set[str]:
        from weaviate.classes.aggregate import GroupByAggregate

        response = self._chunks.with_tenant(workspace).aggregate.over_all(group_by=GroupByAggregate(prop="document_id", limit=GROUP_LIMIT))
        return {str(group.grouped_by.value) for group in response.groups}

    # Search. -------------------------------------------------------------------------

    def _search(
        self, workspace: str, query: str, vector: Sequence[float], top_k: int, vector_weight: float, exclude: Sequence[str]
    ) -> list[Hit]:
        """BM25 and vector lists from Weaviate, fused here by store.fuse, as the embedded store fuses its own.

        Weaviate's own hybrid query ranked some chunks differently from store.fuse over the very
        lists its bm25 and near_vector queries return (its relativeScoreFusion scales them on its
        side), so the two engines would rank alike only by chance; fusing here makes them rank alike
        by construction, and the keyword-evidence rule reads the same BM25 list it fuses.
        """
        from weaviate.classes.query import Filter, MetadataQuery

        chunks = self._chunks.with_tenant(workspace)
        # One not-equal per left-out document: the server version the roll-out pins (1.32) knows no
        # ContainsNone operator (the client's contains_none is refused with "unknown filter operator").
        filters = Filter.all_of([Filter.by_property("document_id").not_equal(d) for d in exclude]) if exclude else None
        wanted = max(CANDIDATES_MIN, 4 * top_k)
        keyword: list[Candidate] = []
        if vector_weight < 1.0 and query.strip():
            response = chunks.query.bm25(
                query=query, query_properties=["text"], limit=wanted, filters=filters, return_metadata=MetadataQuery(score=True)
            )
            keyword = [self._candidate(o, o.metadata.score or 0.0) for o in response.objects]
        similar: list[Candidate] = []
        if vector_weight > 0.0:
            response = chunks.query.near_vector(
                near_vector=list(map(float, vector)), limit=wanted, filters=filters, return_metadata=MetadataQuery(distance=True)
            )
            similar = [self._candidate(o, 1.0 - (o.metadata.distance or 0.0)) for o in response.objects]
        weight = hybrid_weight(query, (c.hit.text for c in keyword), vector_weight, self.keyword_evidence_min)
        return fuse(keyword, similar, weight, top_k, self.fusion)

    @staticmethod
    def _candidate(obj: Any, score: float) -> Candidate:  # weaviate types each property as a union of all values
        p = obj.properties
        hit = Hit(
            text=p["text"],
            score=0.0,
            source=p["source"],
            page=int(p["page"] or 0),
            section=p["section"] or "",
            document_id=p["document_id"],
            chunk_index=int(p["chunk_index"]),
        )
        return Candidate(key=(hit.document_id, hit.chunk_index), score=float(score), hit=hit)

    def chunk_count(self, workspace: str) -> int:
        """Chunks in the workspace (complete documents or not); for benchmarks and tests."""
        response = self._chunks.with_tenant(workspace).aggregate.over_all(total_count=True)
        return int(response.total_count or 0)

    def close(self) -> None:
        self.client.close()
