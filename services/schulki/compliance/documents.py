"""The five documents, in German Markdown, each built from ``Facts``: no sentence states a fact the settings do not give.

The texts are drafts for the school's data protection officer: the DSFA (Art. 35 GDPR) and the record of processing
(Art. 30) name what schulki processes, where and for how long; the measures (Art. 32) and the deletion concept name
the switches as they are set; the letter tells parents the same in plain words.
"""

from __future__ import annotations

from collections.abc import Callable

from schulki.compliance.facts import Facts

AI_ACT = """## Einordnung nach der KI-Verordnung (EU AI Act, Verordnung (EU) 2024/1689)

- schulki ist ein KI-Assistent (Chat, Übersetzung, Fragen zu eigenen Dokumenten, Transkription), den die Schule als
  Betreiberin einsetzt. Es bewertet keine Leistungen, vergibt keine Noten, entscheidet nicht über Zugang, Zulassung
  oder Einstufung und beaufsichtigt keine Prüfungen. Damit fällt der Einsatz nicht unter die Hochrisiko-Anwendungen
  der allgemeinen und beruflichen Bildung (Anhang III Nr. 3), solange die Schule es nicht für solche Zwecke einsetzt.
- schulki erkennt keine Emotionen (verboten in Bildungseinrichtungen nach Art. 5 Abs. 1 lit. f) und verarbeitet
  keine biometrischen Daten. Die Moderation vergleicht Texte mit Wortlisten und Mustern der Schule; sie schließt
  nicht auf Gefühle einer Person und ist kein Emotionserkennungssystem.
- Transparenz (Art. 50): Nutzerinnen und Nutzer sehen, dass sie mit einer KI schreiben; Antworten können falsch sein.
- KI-Kompetenz (Art. 4): Die Schule sorgt dafür, dass Lehrkräfte und Admins, die schulki einsetzen, in seinem Gebrauch
  und seinen Grenzen geschult sind.
- Hinweise der Moderation dürfen nicht zur Leistungsbewertung verwendet werden.
"""


def _yes(value: bool, yes: str, no: str) -> str:
    return yes if value else no


def _models(f: Facts) -> str:
    return "\n".join(f"- {name}" for name in f.chat_models)


def _retention_table(f: Facts) -> str:
    rows = ["| Daten | Frist | Ort | Einstellung |", "|---|---|---|---|"]
    rows += [f"| {r.kind} | {r.period} | {r.place} | {r.setting} |" for r in f.retention]
    return "\n".join(rows)


def _moderation(f: Facts) -> str:
    if not f.moderation:
        return "Die Moderation ist ausgeschaltet (moderation.enabled = false): Fragen und Antworten werden nicht geprüft."
    lines = [
        "Die Moderation ist eingeschaltet (moderation.enabled). Fragen werden vor der KI, Antworten während des Schreibens "
        f"geprüft, mit den Regeln in {f.moderation_rules}, auf den Rechnern der Schule. Folgen je Bereich:",
        "",
    ]
    lines += [f"- {label}: {outcome}" for label, outcome in f.moderation_outcomes.items()]
    kept = "mit dem auslösenden Text (höchstens 500 Zeichen)" if f.moderation_store_text else "ohne den Text der Nachricht"
    lines += [
        "",
        f"Ein Hinweis hält fest, wer, wann, welcher Bereich und welche Folge ({kept}); ihn sehen nur die Lehrkräfte der "
        f"Klassen der Person und die Admins. Hinweise werden nach {f.flag_retention_days} Tagen gelöscht.",
    ]
    return "\n".join(lines)


def _data_kinds(f: Facts) -> str:
    chats = (
        "Chats (Fragen und Antworten), gespeichert nur zur Fortsetzung durch die Person selbst"
        if f.chats_kept
        else "Chats werden nicht gespeichert (Frist 0 Tage); sie bestehen nur während der Sitzung im Browser"
    )
    return "\n".join(
        [
            "- Kontodaten: Name (Kürzel), Rolle (Schüler/in, Lehrkraft, Admin), Klassen, Passwort-Hash, API-Schlüssel-Hash",
            "- Anmeldedaten: Sitzungen, fehlgeschlagene Anmeldungen mit IP-Adresse (Schutz vor Passwort-Raten)",
            "- Nutzungszähler: Anfragen und Tokens je Tag (Kontingente)",
            f"- {chats}",
            "- Hochgeladene Dokumente und ihr Text, Aufnahmen und ihre Transkripte",
            "- Hinweise der Moderation" if f.moderation else "- (keine Hinweise der Moderation: ausgeschaltet)",
        ]
    )


def dsfa(f: Facts) -> str:
    return f"""# Datenschutz-Folgenabschätzung (Entwurf) nach Art. 35 DSGVO: schulki

Verantwortlich: {f.school}, {f.school_address}. Ansprechperson: {f.controller_contact}. Datenschutzbeauftragte/r: {f.dpo_contact}.

Dieser Entwurf wurde von `schulki compliance` aus den Einstellungen der Installation geschrieben. Die Schule prüft
und ergänzt ihn mit ihrer/ihrem Datenschutzbeauftragten.

## 1. Beschreibung der Verarbeitung

schulki ist ein KI-Assistent für den Unterricht. Schülerinnen, Schüler und Lehrkräfte schreiben mit einem
Sprachmodell, übersetzen, stellen Fragen zu eigenen Dokumenten und lassen Aufnahmen verschriftlichen. Alle Modelle
laufen auf Rechnern der Schule; keine Anfrage verlässt das Schulnetz.

Sprachmodelle (Chat):

{_models(f)}

Weitere Modelle: Einbettungen {f.embeddings_model}, Spracherkennung {f.speech_model}.

Rechner:

{chr(10).join(f"- {m}" for m in f.machines)}

Verarbeitete Daten:

{_data_kinds(f)}

## 2. Zwecke, Notwendigkeit und Verhältnismäßigkeit

Zweck ist die Unterstützung des Lernens und Unterrichtens. Die Verarbeitung auf eigenen Rechnern vermeidet die
Übermittlung an Cloud-Anbieter. Daten werden nur so lange gespeichert, wie es die Fristen unten vorsehen;
Kontingente ({_quota(f)}) begrenzen die Nutzung.

## 3. Risiken für die Betroffenen

- Kinder geben in Chats persönliche oder sensible Dinge preis (Gesundheit, Familie, Krisen).
- Ein Sprachmodell kann falsche, unpassende oder verletzende Antworten geben.
- Unbefugte könnten Chats oder Dokumente anderer lesen.
- Inhalte könnten in Protokollen oder Sicherungen länger liegen als vorgesehen.

## 4. Abhilfemaßnahmen

- Protokolle: {_yes(f.log_content, "Inhalte von Anfragen WERDEN protokolliert (runtime.log_content = true) - für den Betrieb ausschalten", "Inhalte von Anfragen, Dokumenten und Transkripten werden nicht protokolliert (runtime.log_content = false)")}.
- Verschlüsselung: {_yes(f.https, "HTTPS zwischen Browser und schulki", "KEIN HTTPS am Gateway (gateway.https = false): nur hinter einem HTTPS-Proxy zulässig")}; {_yes(f.node_tls, "TLS zwischen den Rechnern", "kein TLS zwischen den Diensten (alle auf einem Rechner oder im geschützten Netz)")}.
- Anmeldung: {f.sign_in}; höchstens {f.login_attempts} Fehlversuche in {f.login_window_s:g} Sekunden.
- Trennung: jede Person sieht nur ihre eigenen Chats und Dokumente und die ihrer Klassen; die Dienste erhalten nur ein Pseudonym.
- Moderation: {_moderation(f)}
- Löschfristen: siehe Löschkonzept; eine Person und alle ihre Daten lassen sich mit einem Befehl löschen.

{AI_ACT}
## Fristen

{_retention_table(f)}
"""


def _quota(f: Facts) -> str:
    roles = {"student": "Schüler/innen", "teacher": "Lehrkräfte", "admin": "Admins"}
    return "; ".join(
        f"{roles.get(role, role)}: {f.requests_per_minute.get(role, 0)} Anfragen/Minute, {f.tokens_per_day.get(role, 0)} Tokens/Tag"
        for role in f.requests_per_minute
    )


def record_of_processing(f: Facts) -> str:
    return f"""# Verzeichnis von Verarbeitungstätigkeiten nach Art. 30 DSGVO: schulki

| Angabe | Inhalt |
|---|---|
| Verantwortlicher | {f.school}, {f.school_address} |
| Ansprechperson | {f.controller_contact} |
| Datenschutzbeauftragte/r | {f.dpo_contact} |
| Bezeichnung | KI-Assistent schulki (Chat, Übersetzung, Dokumente, Transkription) |
| Zwecke | Unterstützung von Lernen und Unterricht |
| Rechtsgrundlage | Art. 6 Abs. 1 lit. e DSGVO mit dem Schulgesetz des Landes; [von der Schule zu prüfen] |
| Betroffene | Schülerinnen und Schüler, Lehrkräfte, Admins |
| Empfänger | keine außerhalb der Schule; Lehrkräfte sehen Hinweise der Moderation zu ihren Klassen, Admins verwalten Konten |
| Übermittlung in Drittländer | keine: alle Modelle laufen auf Rechnern der Schule, keine Telemetrie |
| Speicherort | Daten-Ordner {f.data_dir}; Konten: {f.accounts_database}; Dokumente: {f.document_store}; Sicherungen: {f.backups} |
| Technische und organisatorische Maßnahmen | siehe TOM-Dokument |

## Kategorien personenbezogener Daten

{_data_kinds(f)}

## Löschfristen

{_retention_table(f)}
"""


def measures(f: Facts) -> str:
    return f"""# Technische und organisatorische Maßnahmen (Art. 32 DSGVO): schulki

Stand der Einstellungen dieser Installation.

## Vertraulichkeit

- Zugang: {f.sign_in}. Sitzungen gelten {f.session_hours:g} Stunden. Nach {f.login_attempts} Fehlversuchen in {f.login_window_s:g} Sekunden wird die Anmeldung gebremst.
- Rollen: Schüler/innen sehen nur eigene Daten und die ihrer Klassen; Lehrkräfte zusätzlich Hinweise der Moderation zu ihren Klassen; nur Admins verwalten Konten und Einstellungen.
- Übertragung: {_yes(f.https, "HTTPS am Gateway", "kein HTTPS am Gateway (gateway.https = false)")}; {_yes(f.node_tls, "TLS und ein Token je Rechner zwischen den Diensten", "Dienste ohne TLS untereinander (ein Rechner oder geschütztes Netz), mit Token je Rechner")}.
- Pseudonymisierung: die Dienste (Modelle, Dokumentensuche) erhalten statt des Namens ein Pseudonym.
- Protokolle: {_yes(f.log_content, "Inhalte werden protokolliert (runtime.log_content = true)", "keine Inhalte von Anfragen, Dokumenten oder Transkripten in Protokollen (runtime.log_content = false)")}.
- Keine Telemetrie, keine externen Schriften oder Skripte, kein Modell-Download zur Laufzeit.

## Integrität und Verfügbarkeit

- Modelle werden vor dem Laden gegen ihre SHA-256-Prüfsumme geprüft.
- Sicherungen: {f.backups}.
- Kontingente je Rolle: {_quota(f)}.
- Moderation: {_moderation(f)}

## Löschung und Betroffenenrechte

- Fristen: siehe Löschkonzept; die Löschung läuft stündlich automatisch.
- Auskunft: `schulki user export NAME` schreibt alle Daten einer Person in eine ZIP-Datei.
- Löschung: `schulki user delete NAME` löscht Konto, Chats, Dokumente, Transkripte und Hinweise.
"""


def deletion_concept(f: Facts) -> str:
    return f"""# Löschkonzept: schulki

Die Fristen unten sind die Einstellungen dieser Installation (die im Admin-Bereich gesetzten gehen vor). Der Gateway
löscht beim Start und danach stündlich alles, was älter ist; jede Art für sich, sodass ein ausgefallener Dienst nur
seine eigenen Daten verzögert.

{_retention_table(f)}

## Löschung einer Person

`schulki user delete NAME` (oder der Admin-Bereich) löscht das Konto mit allen Chats, Dokumenten, Transkripten,
Dateien und Hinweisen. In Sicherungen bleiben die Daten bis zum Ablauf der Sicherungsfrist
({f.periods["backup_retention_days"]} Tage), da Sicherungen nicht verändert werden.

## Zuständig

{f.controller_contact}
"""


def parents_letter(f: Facts) -> str:
    chats = (
        f"Gespeicherte Chats werden nach {f.periods['chat_retention_days']} Tagen gelöscht."
        if f.chats_kept
        else "Chats werden nicht gespeichert: nach dem Schließen der Seite sind sie weg."
    )
    moderation = (
        "Fragen und Antworten werden auf den Rechnern der Schule auf Hinweise auf Selbstgefährdung, Gewalt, sexuelle "
        "Inhalte und persönliche Daten geprüft. Schreibt Ihr Kind etwas, das auf eine Krise hindeutet, bekommt es statt "
        "einer KI-Antwort die Nummern der Nummer gegen Kummer (116 111) und der TelefonSeelsorge"
        + (
            "; die Lehrkräfte seiner Klasse erhalten einen kurzen Hinweis (wer, wann, welcher Bereich"
            + (", mit dem Text" if f.moderation_store_text else ", ohne den Text")
            + f"), der nach {f.flag_retention_days} Tagen gelöscht wird."
            if "Hinweis an die Lehrkräfte" in " ".join(f.moderation_outcomes.values())
            else "."
        )
        if f.moderation
        else "Eine automatische Prüfung der Inhalte ist an unserer Schule nicht eingeschaltet."
    )
    return f"""# Elternbrief: Der KI-Assistent schulki an unserer Schule

{f.school}

Liebe Eltern und Erziehungsberechtigte,

an unserer Schule können Schülerinnen und Schüler mit dem KI-Assistenten schulki arbeiten: Fragen stellen, Texte
übersetzen, Fragen zu eigenen Unterlagen stellen und Aufnahmen verschriftlichen lassen.

**Alles bleibt in der Schule.** Die KI läuft auf Rechnern der Schule. Keine Frage und kein Dokument wird an eine
Firma im Internet geschickt, es gibt keine Werbung und keine Auswertung zu anderen Zwecken.

Diese Modelle beantworten die Fragen:

{_models(f)}

**Was gespeichert wird und wie lange.** {chats} Hochgeladene Dokumente werden nach
{f.periods["document_retention_days"]} Tagen gelöscht, Transkripte nach {f.periods["transcript_retention_days"]} Tagen. {_yes(f.log_content, "Für die Fehlersuche werden derzeit Inhalte protokolliert.", "Inhalte von Fragen werden nicht protokolliert.")}

**Schutz Ihres Kindes.** {moderation}

**Was schulki nicht tut.** schulki gibt keine Noten, bewertet keine Leistungen und erkennt keine Gefühle. Die KI kann
sich irren; wir besprechen das im Unterricht.

**Ihre Rechte.** Sie können Auskunft über die gespeicherten Daten Ihres Kindes und deren Löschung verlangen. Wenden
Sie sich an: {f.controller_contact}. Datenschutzbeauftragte/r: {f.dpo_contact}.

Mit freundlichen Grüßen

Ihre Schulleitung
"""


DOCUMENTS: dict[str, tuple[str, Callable[[Facts], str]]] = {
    "dsfa": ("Datenschutz-Folgenabschätzung (Entwurf)", dsfa),
    "verarbeitungsverzeichnis": ("Verzeichnis von Verarbeitungstätigkeiten", record_of_processing),
    "toms": ("Technische und organisatorische Maßnahmen", measures),
    "loeschkonzept": ("Löschkonzept", deletion_concept),
    "elternbrief": ("Elternbrief", parents_letter),
}
"""Each document by its file name (without .md / .pdf): its title and the function that writes it."""
