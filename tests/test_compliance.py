"""``schulki compliance``: the documents are written from the live settings, as Markdown and as PDF that opens.

The PDFs are read back with pypdf, the reader the document parser uses."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from pypdf import PdfReader
from schulki.compliance.documents import DOCUMENTS
from schulki.compliance.facts import gather
from schulki.config import Config
from schulki.gateway.accounts.database import Accounts, database_url

REPO = Path(__file__).resolve().parent.parent
FILES = sorted(
    f"{name}.{kind}" for name in ("dsfa", "verarbeitungsverzeichnis", "toms", "loeschkonzept", "elternbrief") for kind in ("md", "pdf")
)


def _run(tmp_path: Path, folder: str, **settings: str) -> Path:
    env = {key: value for key, value in os.environ.items() if not key.startswith("SCHULKI_")}
    code = os.environ.get("PYTHONPATH") or str(REPO / "services")  # the schulki under test, as this process imports it
    env |= {"SCHULKI_DATA_DIR": str(tmp_path / "data"), "PYTHONPATH": code} | settings
    out = tmp_path / folder
    done = subprocess.run(
        [sys.executable, "-m", "schulki.cli", "compliance", "-o", str(out)], env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert sorted(p.name for p in out.iterdir()) == FILES
    assert all(str(out / name) in done.stdout for name in FILES), done.stdout
    return out


def _pdf_text(path: Path) -> str:
    return " ".join(" ".join(page.extract_text().split()) for page in PdfReader(path).pages)


def test_a_changed_retention_setting_is_in_every_document_that_names_it(tmp_path):
    changed = _run(
        tmp_path,
        "changed",
        SCHULKI_GATEWAY__CHAT_RETENTION_DAYS="17",
        SCHULKI_MODERATION__FLAG_RETENTION_DAYS="45",
        SCHULKI_COMPLIANCE__SCHOOL_NAME="Gesamtschule Am Park",
    )
    default = _run(tmp_path, "default")
    for folder, days, flag_days in ((changed, 17, 45), (default, 30, 90)):
        for name in ("loeschkonzept", "verarbeitungsverzeichnis", "dsfa"):
            markdown = (folder / f"{name}.md").read_text(encoding="utf-8")
            assert f"| gespeicherte Chats | {days} Tage |" in markdown, name
            assert f"| Hinweise der Moderation | {flag_days} Tage |" in markdown, name
            text = _pdf_text(folder / f"{name}.pdf")  # the PDF opens, and says the same
            assert f"gespeicherte Chats {days} Tage" in text, (name, text[:3000])
        assert f"nach {days} Tagen gelöscht" in _pdf_text(folder / "elternbrief.pdf")
    assert "17 Tage" not in (default / "loeschkonzept.md").read_text(encoding="utf-8")
    assert "Gesamtschule Am Park" in _pdf_text(changed / "elternbrief.pdf")
    assert "[bitte eintragen]" in (default / "elternbrief.md").read_text(encoding="utf-8")


def _documents(config: Config) -> dict[str, str]:
    facts = gather(config)
    return {name: build(facts) for name, (_, build) in DOCUMENTS.items()}


def test_each_switch_changes_what_the_documents_say(tmp_path):
    plain = _documents(Config(data_dir=tmp_path))
    assert "werden nicht protokolliert (runtime.log_content = false)" in plain["dsfa"]
    assert "Die Moderation ist eingeschaltet" in plain["toms"] and "ohne den Text der Nachricht" in plain["toms"]
    assert "HTTPS am Gateway" in plain["toms"] and "lokale schulki-Konten" in plain["toms"]

    config = Config(data_dir=tmp_path)
    config.runtime.log_content = True
    config.gateway.https = False
    config.gateway.chat_retention_days = 0
    config.gateway.database_url = "postgresql://schulki:geheim@db.schule.lan/schulki"
    config.inference.model_path = Path("/srv/modelle/Llama-3.1-8B-Instruct-Q6_K.gguf")
    config.moderation.store_text = True
    changed = _documents(config)
    assert "Inhalte von Anfragen WERDEN protokolliert" in changed["dsfa"]
    assert "kein HTTPS am Gateway" in changed["toms"]
    assert "Chats werden nicht gespeichert" in changed["elternbrief"] and "werden nicht gespeichert (0 Tage)" in changed["loeschkonzept"]
    assert "Llama-3.1-8B-Instruct-Q6_K.gguf" in changed["elternbrief"] and "Gemma" not in changed["elternbrief"]
    assert "postgresql://schulki:***@db.schule.lan/schulki" in changed["verarbeitungsverzeichnis"]
    assert "geheim" not in " ".join(changed.values())
    assert "mit dem auslösenden Text" in changed["toms"] and "mit dem Text" in changed["elternbrief"]

    config.gateway.ldap.enabled, config.gateway.ldap.url, config.gateway.local_passwords = True, "ldaps://dc.schule.lan", "admins"
    directory = _documents(config)["toms"]
    assert (
        "LDAP (ldaps://dc.schule.lan" in directory and "lokale schulki-Konten mit Passwort" in directory and "nur für Admins" in directory
    )
    assert "OpenID Connect" not in directory  # a directory kind that is off is not named

    config.moderation.enabled = False
    off = _documents(config)
    assert "Die Moderation ist ausgeschaltet" in off["dsfa"] and "nicht eingeschaltet" in off["elternbrief"]


def test_the_admin_tabs_retention_period_wins_over_the_settings_file(tmp_path):
    config = Config(data_dir=tmp_path)
    accounts = Accounts(database_url(None, tmp_path))  # where the gateway keeps it
    accounts.set_setting("chat_retention_days", "9")
    accounts.engine.dispose()
    assert "| gespeicherte Chats | 9 Tage |" in _documents(config)["loeschkonzept"]


AI_ACT_SAYS = {
    "dsfa": ("KI-Verordnung", "vergibt keine Noten", "Anhang III Nr. 3", "erkennt keine Emotionen", "Art. 5 Abs. 1 lit. f", "Art. 50"),
    "elternbrief": ("gibt keine Noten", "erkennt keine Gefühle"),
}


@pytest.mark.parametrize("name", sorted(AI_ACT_SAYS))
def test_the_documents_say_where_schulki_stands_under_the_ai_act(tmp_path, name):
    text = " ".join(_documents(Config(data_dir=tmp_path))[name].split())
    missing = [words for words in AI_ACT_SAYS[name] if words not in text]
    assert missing == []
