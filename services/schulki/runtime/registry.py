"""The one list of schulki's gRPC services: name, proto service, settings section, default port, stub and label.

Everything that needs the list of services reads it here: ``schulki serve`` and
``schulki up`` (cli.py), the container health check, the gateway's clients and
its German/English labels, and the roll-out planner (models/fleet.py). Adding a
service means adding one entry here (and its package ``schulki.<name>`` with a
``build(config)``, and its section in config.py).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ServiceSpec:
    """One gRPC service."""

    name: str
    """Its name: the package ``schulki.<name>``, the settings section ``[<name>]``, the argument of ``schulki serve``."""
    proto_service: str
    """The full name of its proto service, as the gRPC health protocol names it."""
    default_port: int
    """Its port when the settings name none (the default of its section's ``port``)."""
    stub: str
    """``module:Class`` of its generated client stub."""
    requires: tuple[str, ...]
    """Python modules its engine needs (its extra in pyproject.toml); without them it is not installed here."""
    label_de: str
    """What the web page calls it (German)."""
    label_en: str
    """What the web page calls it (English)."""

    def stub_class(self) -> Any:
        module, name = self.stub.split(":")
        return getattr(importlib.import_module(module), name)

    # The settings are taken as any object with a section per service: config.py reads this list to build its
    # defaults, so naming its Config here would tie the two modules in a circle.
    def section(self, config: object) -> Any:
        """Its section of the settings (``config.<name>`` of schulki.config.Config)."""
        return getattr(config, self.name)

    def port(self, config: object) -> int:
        """Its port in these settings."""
        return int(self.section(config).port)

    def installed(self) -> bool:
        """Whether its package and the libraries its engine needs can be imported here."""
        try:
            return all(importlib.util.find_spec(module) is not None for module in (f"schulki.{self.name}", *self.requires))
        except (ImportError, ValueError):
            return False

    def label(self, lang: str) -> str:
        return self.label_en if lang == "en" else self.label_de


SERVICES: tuple[ServiceSpec, ...] = (
    ServiceSpec(
        "inference",
        "schulki.inference.v1.InferenceService",
        50051,
        "schulki.inference.v1.inference_service_pb2_grpc:InferenceServiceStub",
        ("llama_cpp",),
        "Chat-Modell",
        "chat model",
    ),
    ServiceSpec(
        "embeddings",
        "schulki.embeddings.v1.EmbeddingsService",
        50052,
        "schulki.embeddings.v1.embeddings_service_pb2_grpc:EmbeddingsServiceStub",
        ("llama_cpp", "numpy"),
        "Einbettungen",
        "embeddings",
    ),
    ServiceSpec(
        "transcription",
        "schulki.transcription.v1.TranscriptionService",
        50053,
        "schulki.transcription.v1.transcription_service_pb2_grpc:TranscriptionServiceStub",
        ("faster_whisper", "av"),
        "Transkription",
        "transcription",
    ),
    ServiceSpec(
        "retrieval",
        "schulki.retrieval.v1.RetrievalService",
        50054,
        "schulki.retrieval.v1.retrieval_service_pb2_grpc:RetrievalServiceStub",
        ("lancedb", "pyarrow", "pypdf"),
        "Dokumentensuche",
        "document search",
    ),
)
"""Every gRPC service, in the order ``schulki up`` starts them (the embeddings service before retrieval, which calls it)."""

NAMES: tuple[str, ...] = tuple(spec.name for spec in SERVICES)
BY_NAME: dict[str, ServiceSpec] = {spec.name: spec for spec in SERVICES}


def spec(name: str) -> ServiceSpec:
    """The service called name; KeyError for one that does not exist."""
    return BY_NAME[name]


def installed_services() -> list[str]:
    """The services whose code and engine libraries are installed here, in start order."""
    return [service.name for service in SERVICES if service.installed()]
