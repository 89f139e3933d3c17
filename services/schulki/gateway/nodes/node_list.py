"""Which nodes the gateway calls, read again while it runs, so nodes join and leave without a restart.

Two places name nodes: the settings (``gateway.*_addresses`` and
``gateway.inference_nodes``, which the roll-out writes into the settings file)
and ``gateway.nodes_file`` (``schulki up`` writes it as it starts one inference
process per chat model). With every health check the gateway looks whether
either file changed (its time and size) and, when one did, reads it again: a node
no longer named is left out at once (its running answers finish), a new one is
called from then on. The settings file is followed only when the running
settings came from it (``SCHULKI_CONFIG``, as the gateway's process reads it at
start); settings given in code stay as they are. A settings file that no longer
reads keeps the nodes of the last good read, with a warning in the log.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

from schulki.config import Config, SettingsError, load_config
from schulki.models.served import canonical_name
from schulki.runtime import registry

log = logging.getLogger(__name__)

NODE_FIELDS = ("inference_addresses", "inference_nodes", "embeddings_addresses", "transcription_addresses", "retrieval_addresses")
"""The gateway settings that name nodes."""


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_mtime_ns, stat.st_size


def _same_nodes(a: Config, b: Config) -> bool:
    return all(getattr(a.gateway, name) == getattr(b.gateway, name) for name in (*NODE_FIELDS, "nodes_file"))


class NodeList:
    """The nodes the settings and the nodes file name right now, per service, with the model each inference node should serve."""

    def __init__(self, config: Config):
        self.config = config
        """The settings the node lists come from now: those the gateway started with, or the settings file as last read."""
        self._settings_file: Path | None = None
        self._settings_stamp: tuple[int, int] | None = None
        self._nodes_file_stamp: tuple[int, int] | None = None
        self._nodes_file_entries: dict[str, str] = {}
        source = os.environ.get("SCHULKI_CONFIG")
        if source:
            stamp = _stamp(Path(source))
            try:
                if _same_nodes(load_config(), config):
                    self._settings_file, self._settings_stamp = Path(source), stamp
            except SettingsError:
                pass

    def _reread_settings(self) -> None:
        if self._settings_file is None:
            return
        stamp = _stamp(self._settings_file)
        if stamp is None or stamp == self._settings_stamp:
            return
        self._settings_stamp = stamp
        try:
            fresh = load_config()
        except SettingsError as error:
            log.warning("the settings file changed but does not read; the gateway keeps its nodes: %s", error)
            return
        if not _same_nodes(fresh, self.config):
            log.info("the settings file names other nodes now; the gateway follows it")
        self.config = fresh

    def _reread_nodes_file(self) -> None:
        path = self.config.gateway.nodes_file
        if path is None:
            self._nodes_file_entries = {}
            return
        stamp = _stamp(Path(path))
        if stamp == self._nodes_file_stamp:
            return
        if stamp is None:  # not written yet (schulki up writes it as it starts the models) or removed
            self._nodes_file_stamp, self._nodes_file_entries = None, {}
            return
        try:
            entries = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as error:
            log.warning("cannot read the nodes file %s: %s", path, error)
            return
        self._nodes_file_stamp = stamp
        self._nodes_file_entries = {}
        for entry in entries if isinstance(entries, list) else []:
            address = str(entry.get("address", "")) if isinstance(entry, dict) else ""
            if address:
                self._nodes_file_entries[address] = canonical_name(str(entry.get("model", "")))

    def addresses(self, name: str) -> list[str]:
        """The nodes of one service the settings name (this machine's port when they name none)."""
        gateway = self.config.gateway
        configured = list(getattr(gateway, f"{name}_addresses") or [])
        if name == "inference":
            configured += [node.address for node in gateway.inference_nodes if node.address not in configured]
            configured += [address for address in self._nodes_file_entries if address not in configured]
            if not configured and gateway.nodes_file is not None:
                return []  # schulki up names every local node in the nodes file
        return configured or [f"127.0.0.1:{registry.spec(name).port(self.config)}"]

    def wanted(self, services: list[str]) -> dict[str, dict[str, str]]:
        """Per service: address -> the model the settings say it serves ("" where they do not say, and for other services)."""
        self._reread_settings()
        self._reread_nodes_file()
        models = {**self._nodes_file_entries, **{node.address: canonical_name(node.model) for node in self.config.gateway.inference_nodes}}
        return {
            name: {address: models.get(address, "") if name == "inference" else "" for address in self.addresses(name)} for name in services
        }
