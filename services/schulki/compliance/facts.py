"""The facts of the compliance documents, each read from the settings: models, places, periods, switches.

Nothing here is written for a typical school: where a document says how long chats are kept, which models answer
or whether prompts are logged, the value comes from ``Config`` (and from the Admin tab's retention periods, which
win over the settings file as they do in the running gateway). What only the school knows (its name, address,
contacts) comes from the ``compliance`` settings section, or is marked to be filled in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from schulki.config import Config
from schulki.gateway.moderation.rules import CATEGORIES, DEFAULT_RULES, LABELS

MISSING = "[bitte eintragen]"
"""What a document shows where the school has not named a fact the settings cannot know."""
OUTCOMES = {"pass": "durchlassen", "warn": "Antwort mit Hinweis", "block": "feste Antwort statt der KI"}
PERIODS = ("chat_retention_days", "document_retention_days", "transcript_retention_days", "backup_retention_days")
"""The retention periods the admin may change in the Admin tab (stored in the accounts database's settings)."""


@dataclass
class Retention:
    kind: str
    period: str
    place: str
    setting: str


@dataclass
class Facts:
    """Everything the documents state, with the setting each comes from."""

    school: str
    school_address: str
    controller_contact: str
    dpo_contact: str
    chat_models: list[str]
    embeddings_model: str
    speech_model: str
    machines: list[str]
    data_dir: str
    accounts_database: str
    document_store: str
    backups: str
    retention: list[Retention]
    chats_kept: bool
    log_content: bool
    https: bool
    node_tls: bool
    sign_in: str
    login_attempts: int
    login_window_s: float
    session_hours: float
    requests_per_minute: dict[str, int]
    tokens_per_day: dict[str, int]
    moderation: bool
    moderation_rules: str
    periods: dict[str, int] = field(default_factory=dict)
    """The retention periods in days, by setting name (the Admin tab's where set there)."""
    moderation_outcomes: dict[str, str] = field(default_factory=dict)
    moderation_store_text: bool = False
    flag_retention_days: int = 0


def _without_password(url: str) -> str:
    """A database URL as a document may show it: the password replaced."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


def _admin_periods(config: Config) -> dict[str, int]:
    """The retention periods the admin set in the Admin tab, where the accounts database already exists (none is created)."""
    url = config.gateway.database_url
    if not url:
        path = Path(config.data_dir) / "gateway" / "accounts.sqlite3"
        if not path.exists():
            return {}
        url = f"sqlite:///{path}"
    try:
        from sqlalchemy import create_engine, text

        engine = create_engine(url)
        with engine.connect() as connection:
            rows = connection.execute(text("SELECT key, value FROM settings")).all()
        engine.dispose()
    except Exception:  # no settings table yet, or a server that does not answer: the settings file's periods hold
        return {}
    return {str(key): int(value) for key, value in rows if key in PERIODS and str(value).lstrip("-").isdigit()}


def _name(path: Path | None, fallback: str) -> str:
    return path.name if path else fallback


def _chat_models(config: Config) -> list[str]:
    models = []
    if config.inference.model_path or config.inference.model_name:
        models.append(config.inference.model_name or _name(config.inference.model_path, ""))
    models += [path.name for path in config.inference.more_models]
    models += [node.model or node.address for node in config.gateway.inference_nodes]
    if config.gateway.default_model and config.gateway.default_model not in models:
        models.insert(0, config.gateway.default_model)
    return list(dict.fromkeys(models)) or ["Gemma 3 270M (Q4_K_M), das Standardmodell von schulki up"]


def _machines(config: Config) -> list[str]:
    gateway = config.gateway
    found = [f"Gateway (Web-Oberfläche und API): Port {gateway.port}"]
    for service in ("inference", "embeddings", "transcription", "retrieval"):
        addresses = getattr(gateway, f"{service}_addresses") or []
        if service == "inference":
            addresses = addresses + [node.address for node in gateway.inference_nodes]
        found.append(f"{service}: {', '.join(addresses) if addresses else 'auf demselben Rechner wie das Gateway'}")
    return found


def _sign_in(config: Config) -> str:
    """How users sign in: through the school's directory (OpenID Connect, LDAP) where it is switched on, and with
    schulki's own passwords for everyone or for the admins only (``gateway.local_passwords``)."""
    g = config.gateway
    local = "lokale schulki-Konten mit Passwort (gespeichert nur als Argon2-Hash) und persönlichem API-Schlüssel"
    directory = []
    if g.oidc.enabled:
        directory.append(
            f"Schulkonto über OpenID Connect beim Anbieter {g.oidc.issuer or MISSING} (schulki erhält eine Kennung, Rolle und Klassen;"
            " ein Pseudonym genügt, Name und E-Mail sind nicht nötig)"
        )
    if g.ldap.enabled:
        directory.append(
            f"Verzeichnisdienst der Schule über LDAP ({g.ldap.url or MISSING}; das Passwort wird dort geprüft, nicht bei schulki gespeichert)"
        )
    if not directory:
        return local
    return "; ".join(directory) + "; " + (f"{local} nur für Admins" if g.local_passwords == "admins" else f"daneben {local}")


def gather(config: Config) -> Facts:
    """The facts of the live settings."""
    g, school = config.gateway, config.compliance
    periods = {name: getattr(g, name) for name in PERIODS} | _admin_periods(config)
    data = Path(config.data_dir)
    database = _without_password(g.database_url) if g.database_url else f"SQLite-Datei {data / 'gateway' / 'accounts.sqlite3'}"
    if config.retrieval.store == "weaviate":
        store = f"Weaviate-Server {config.retrieval.weaviate_url or MISSING} (im Schulnetz)"
    else:
        store = f"eingebettete Datenbank (LanceDB) in {config.retrieval.store_path or data / 'retrieval'}"
    backups = (
        f"{g.backup_dir or data / 'backups'} (die letzten {g.backup_keep} Sicherungen, höchstens {periods['backup_retention_days']} Tage)"
    )
    chats = periods["chat_retention_days"]
    moderation = config.moderation
    retention = [
        Retention(
            "gespeicherte Chats",
            f"{chats} Tage" if chats else "werden nicht gespeichert (0 Tage)",
            "Kontendatenbank",
            "gateway.chat_retention_days",
        ),
        Retention(
            "Dokumente (Text und Vektoren)",
            f"{periods['document_retention_days']} Tage nach dem Hochladen",
            store,
            "gateway.document_retention_days",
        ),
        Retention(
            "Transkripte (Download-Dateien)",
            f"{periods['transcript_retention_days']} Tage",
            f"{data / 'gateway' / 'files'}",
            "gateway.transcript_retention_days",
        ),
        Retention("Sicherungen (Backups)", f"{periods['backup_retention_days']} Tage", backups, "gateway.backup_retention_days"),
        Retention(
            "hochgeladene Dateien im Zwischenspeicher, Datenexporte",
            f"{g.upload_retention_hours:g} Stunde(n)",
            f"{data / 'gateway' / 'uploads'} und Kontendatenbank",
            "gateway.upload_retention_hours",
        ),
        Retention(
            "Hinweise der Moderation",
            f"{moderation.flag_retention_days} Tage",
            "Kontendatenbank",
            "moderation.flag_retention_days",
        ),
        Retention("Anmeldesitzungen", f"{g.session_hours:g} Stunde(n)", "Kontendatenbank", "gateway.session_hours"),
        Retention(
            "Konten, Klassen, Nutzungszähler",
            "bis zur Löschung des Kontos (schulki user delete oder Admin-Bereich)",
            "Kontendatenbank",
            "-",
        ),
    ]
    return Facts(
        school=school.school_name or MISSING,
        school_address=school.school_address or MISSING,
        controller_contact=school.controller_contact or MISSING,
        dpo_contact=school.data_protection_officer or MISSING,
        chat_models=_chat_models(config),
        embeddings_model=_name(config.embeddings.model_path, "all-MiniLM-L6-v2 (Standard)"),
        speech_model=_name(config.transcription.model_path, "Whisper base (Standard)"),
        machines=_machines(config),
        data_dir=str(data),
        accounts_database=database,
        document_store=store,
        backups=backups,
        retention=retention,
        chats_kept=chats > 0,
        log_content=config.runtime.log_content,
        https=g.https,
        node_tls=config.runtime.tls_cert_file is not None,
        sign_in=_sign_in(config),
        login_attempts=g.login_attempts,
        login_window_s=g.login_window_s,
        session_hours=g.session_hours,
        requests_per_minute=dict(g.requests_per_minute),
        tokens_per_day=dict(g.tokens_per_day),
        moderation=moderation.enabled,
        moderation_rules=str(moderation.rules_file or DEFAULT_RULES),
        moderation_outcomes={
            LABELS[c]: OUTCOMES[getattr(moderation, c).outcome] + (", Hinweis an die Lehrkräfte" if getattr(moderation, c).notify else "")
            for c in CATEGORIES
        },
        periods=periods,
        moderation_store_text=moderation.store_text,
        flag_retention_days=moderation.flag_retention_days,
    )
