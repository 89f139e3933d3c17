"""Every text the gateway shows, German first, with English.

``strings(lang)`` returns a mapping for one language; a key missing in English
falls back to German, so a student never sees a raw key.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from schulki.runtime import registry

LANGUAGES = ("de", "en")

STRINGS: dict[str, tuple[str, str]] = {
    # login
    "login_title": ("Anmelden", "Log in"),
    "login_intro": ("Melde dich mit deinem Benutzernamen und Passwort an.", "Log in with your user name and password."),
    "login_name": ("Benutzername", "User name"),
    "login_password": ("Passwort", "Password"),
    "login_submit": ("Anmelden", "Log in"),
    "login_no_role": (
        "Dein Schulkonto gehört zu keiner Gruppe, die schulki eine Rolle gibt. Bitte wende dich an die Schul-IT.",
        "Your school account is in no group that gives it a role in schulki. Please ask the school's IT.",
    ),
    "login_bad_identity": ("Das Schulkonto hat keine gültige Kennung.", "The school account has no valid id."),
    "login_directory_down": (
        "Das Schulverzeichnis antwortet gerade nicht. Bitte versuche es gleich noch einmal.",
        "The school directory does not answer just now. Please try again in a moment.",
    ),
    "login_school_account": ("Mit Schulkonto anmelden", "Sign in with school account"),
    "login_oidc_off": ("Die Anmeldung mit Schulkonto ist nicht eingerichtet.", "Signing in with a school account is not set up."),
    "login_oidc_state": (
        "Diese Anmeldung wurde nicht in diesem Browser begonnen oder ist abgelaufen. Bitte melde dich neu an.",
        "This sign-in was not started in this browser or has expired. Please sign in again.",
    ),
    "login_oidc_cancelled": ("Die Anmeldung mit Schulkonto wurde abgebrochen.", "Signing in with the school account was cancelled."),
    "login_oidc_refused": (
        "Die Anmeldung mit Schulkonto wurde abgelehnt (ungültige Antwort des Anmeldedienstes).",
        "Signing in with the school account was refused (the sign-in service's answer is not valid).",
    ),
    "login_failed": ("Benutzername oder Passwort ist falsch.", "Wrong user name or password."),
    "login_blocked": ("Zu viele Fehlversuche. Bitte warte einige Minuten.", "Too many failed attempts. Please wait a few minutes."),
    "login_too_many": (
        "Zu viele Anmeldungen in kurzer Zeit. Bitte warte einige Minuten.",
        "Too many logins in a short time. Please wait a few minutes.",
    ),
    "login_busy": (
        "Gerade melden sich sehr viele an. Bitte versuche es in ein paar Sekunden noch einmal.",
        "Many people are logging in right now. Please try again in a few seconds.",
    ),
    "other_language": ("English", "Deutsch"),
    "logout": ("Abmelden", "Log out"),
    "signed_in_as": ("Angemeldet als", "Logged in as"),
    "not_logged_in": ("Du bist nicht angemeldet. Bitte lade die Seite neu.", "You are not logged in. Please reload the page."),
    # service state
    "service_down": (
        "Der Dienst „{service}“ ist gerade nicht erreichbar. Die anderen Bereiche funktionieren weiter; dieser kommt von selbst wieder, sobald der Dienst läuft.",
        "The {service} service is not reachable right now. The other tabs keep working; this one comes back by itself once the service runs.",
    ),
    "error": ("Fehler: {message}", "Error: {message}"),
    # tabs
    "tab_chat": ("Chat", "Chat"),
    "tab_documents": ("Dokumente", "Documents"),
    "tab_transcription": ("Transkription", "Transcription"),
    "tab_translate": ("Übersetzen", "Translate"),
    "tab_admin": ("Admin", "Admin"),
    # chat
    "preset": ("Rolle des Assistenten", "Assistant's role"),
    "preset_assistant": ("Assistent", "Assistant"),
    "preset_tutor": ("Tutor (erklärt, statt zu lösen)", "Tutor (explains instead of solving)"),
    "preset_translator": ("Übersetzer", "Translator"),
    "preset_coding": ("Programmierhilfe", "Coding help"),
    "message": ("Deine Nachricht", "Your message"),
    "message_placeholder": ("Schreib eine Frage und drücke Enter …", "Type a question and press Enter …"),
    "send": ("Senden", "Send"),
    "stop": ("Stopp", "Stop"),
    "new_chat": ("Neuer Chat", "New chat"),
    "saved_chats": ("Gespeicherte Chats", "Saved chats"),
    "unknown_chat": (
        "Diesen gespeicherten Chat gibt es nicht. Wähle einen aus der Liste.",
        "There is no such saved chat. Pick one from the list.",
    ),
    "load_chat": ("Öffnen", "Open"),
    "empty_message": ("Bitte schreib zuerst eine Nachricht.", "Please type a message first."),
    "retention_note": ("Chats werden {days} Tage gespeichert und dann gelöscht.", "Chats are kept for {days} days, then deleted."),
    "retention_none": ("Chats werden nicht gespeichert.", "Chats are not stored."),
    "model": ("Modell", "Model"),
    "demo_model_note": (
        "ℹ️ Hier antwortet nur das eingebaute **Demo-Modell** (Gemma 3 270M): ein sehr kleines Grundmodell, dessen Antworten oft Unsinn sind. "
        "Ein Admin fügt ein richtiges Modell hinzu – mit `schulki models add DATEI.gguf` oder im Admin-Tab unter „Modelle“.",
        "ℹ️ Only the built-in **demo model** (Gemma 3 270M) answers here: a very small base model whose answers are often nonsense. "
        "An admin adds a real model with `schulki models add FILE.gguf` or in the Admin tab under “Models”.",
    ),
    "answer_broke_off": (
        "Der Rechner, der diese Antwort schrieb, ist ausgefallen. Frag bitte noch einmal – ein anderer antwortet.",
        "The machine writing this answer stopped. Please ask again – another one will answer.",
    ),
    "no_model": ("Gerade ist kein Chat-Modell erreichbar.", "No chat model is available right now."),
    "lesson_model": ("Modell für den Unterricht (Lehrkräfte)", "Model for a lesson (teachers)"),
    "lesson_class": ("Klasse", "Class"),
    "lesson_default": ("Schulstandard", "School default"),
    "lesson_set": ("Für die Klasse festlegen", "Set for the class"),
    "lesson_saved": ("Die Klasse {name} nutzt jetzt: {model}.", "Class {name} now uses: {model}."),
    # documents
    "workspace": ("Arbeitsbereich", "Workspace"),
    "my_documents": ("Meine Dokumente", "My documents"),
    "class_workspace": ("Klasse {name}", "Class {name}"),
    "upload": ("Dokument hochladen (PDF, DOCX, ODT, TXT, …)", "Upload a document (PDF, DOCX, ODT, TXT, …)"),
    "upload_button": ("Hochladen", "Upload"),
    "uploaded": ("„{name}“ ist gespeichert: {chunks} Abschnitte, {pages} Seiten.", "“{name}” is stored: {chunks} chunks, {pages} pages."),
    "no_file": ("Bitte wähle zuerst eine Datei.", "Please choose a file first."),
    "read_only": (
        "In diesem Arbeitsbereich dürfen nur Lehrkräfte Dokumente ändern.",
        "Only teachers may change documents in this workspace.",
    ),
    "no_access": ("Diesen Arbeitsbereich gibt es für dich nicht.", "This workspace does not exist for you."),
    "documents": ("Dokumente im Arbeitsbereich", "Documents in the workspace"),
    "col_file": ("Datei", "File"),
    "col_pages": ("Seiten", "Pages"),
    "col_chunks": ("Abschnitte", "Chunks"),
    "col_size": ("Größe (KB)", "Size (KB)"),
    "col_id": ("ID", "ID"),
    "refresh": ("Aktualisieren", "Refresh"),
    "delete_document": ("Dokument löschen", "Delete document"),
    "delete": ("Löschen", "Delete"),
    "deleted": ("Gelöscht.", "Deleted."),
    "question": ("Frage zu den Dokumenten", "Question about the documents"),
    "ask": ("Fragen", "Ask"),
    "answer": ("Antwort", "Answer"),
    "sources": ("Quellen", "Sources"),
    "page": ("S.", "p."),
    "no_hits": ("In diesem Arbeitsbereich wurde nichts Passendes gefunden.", "Nothing matching was found in this workspace."),
    "new_conversation": ("Neues Gespräch", "New conversation"),
    "follow_up": ("Folgefrage: gesucht zusammen mit {questions}", "Follow-up: searched together with {questions}"),
    # documents: whole document (summarize, translate)
    "whole_document": ("Ganzes Dokument", "Whole document"),
    "whole_pick": ("Dokument", "Document"),
    "whole_length": ("Länge der Zusammenfassung", "Length of the summary"),
    "whole_length_paragraph": ("ein Absatz", "one paragraph"),
    "whole_length_page": ("eine Seite", "one page"),
    "whole_length_lesson": ("Stichpunkte für den Unterricht", "key points for a lesson"),
    "whole_summarize": ("Zusammenfassen", "Summarize"),
    "whole_language": ("Übersetzen in", "Translate into"),
    "whole_translate": ("Übersetzen", "Translate"),
    "whole_result": ("Ergebnis", "Result"),
    "whole_no_document": ("Bitte wähle zuerst ein Dokument.", "Please pick a document first."),
    "whole_done": ("Fertig: „{name}“ in {parts} Teilen.", "Done: “{name}” in {parts} parts."),
    "whole_download_md": ("Markdown herunterladen", "Download Markdown"),
    "whole_download_docx": ("Word (.docx) herunterladen", "Download Word (.docx)"),
    # web pages in the Dokumente tab
    "web_url": (
        "Webseite (Adresse, z. B. https://de.wikipedia.org/wiki/Vulkan)",
        "Web page (address, e.g. https://en.wikipedia.org/wiki/Volcano)",
    ),
    "web_add": ("Webseite hinzufügen", "Add web page"),
    "web_add_summarize": ("Hinzufügen und zusammenfassen", "Add and summarize"),
    "no_url": ("Bitte gib zuerst die Adresse einer Webseite ein.", "Please enter a web page's address first."),
    "url_too_long": ("Die Adresse ist zu lang: höchstens {max} Zeichen.", "The address is too long: at most {max} characters."),
    "web_added": ("Die Webseite „{name}“ ist gespeichert: {chunks} Abschnitte.", "The web page “{name}” is stored: {chunks} chunks."),
    "ingest_stages": ("Empfangen|Lesen|Einbetten|Speichern|Abrufen", "Receiving|Reading|Embedding|Storing|Fetching"),
    # transcription
    "recording": ("Aufnahme hochladen oder mit dem Mikrofon aufnehmen", "Upload a recording or record with the microphone"),
    "language": ("Sprache", "Language"),
    "auto_detect": ("Automatisch erkennen", "Detect automatically"),
    "transcribe": ("Transkribieren", "Transcribe"),
    "segments": ("Text", "Text"),
    "detected_language": ("Erkannte Sprache: {language} ({probability:.0%})", "Detected language: {language} ({probability:.0%})"),
    "no_recording": ("Bitte lade zuerst eine Aufnahme hoch oder nimm eine auf.", "Please upload or record something first."),
    "download_txt": ("TXT herunterladen", "Download TXT"),
    "download_srt": ("SRT herunterladen", "Download SRT"),
    "download_vtt": ("VTT herunterladen", "Download VTT"),
    # translate
    "source_language": ("Ausgangssprache", "Source language"),
    "target_language": ("Zielsprache", "Target language"),
    "source_text": ("Text", "Text"),
    "translation": ("Übersetzung", "Translation"),
    "translate": ("Übersetzen", "Translate"),
    "detected": ("Erkannt: {language}", "Detected: {language}"),
    "not_detected": ("Sprache nicht sicher erkannt", "Language not detected with certainty"),
    # admin
    "admin_only": ("Nur für Admins.", "Admins only."),
    "certificates_expiring": (
        "⚠️ Zertifikate laufen bald ab. Die Erneuerung (deploy/renew-certificates auf dem Admin-Rechner) hat nicht stattgefunden:",
        "⚠️ Certificates expire soon. The renewal (deploy/renew-certificates on the admin's machine) did not happen:",
    ),
    "certificate_ends": ("endet am {date} (noch {days} Tage)", "ends on {date} ({days} days left)"),
    "certificate_ended": ("ist seit {date} abgelaufen", "expired on {date}"),
    "health": ("Dienste und Knoten", "Services and nodes"),
    "col_service": ("Dienst", "Service"),
    "col_node": ("Knoten", "Node"),
    "col_status": ("Status", "Status"),
    "models": ("Modelle der Inferenz-Knoten", "Models of the inference nodes"),
    "col_model": ("Modell", "Model"),
    "col_quant": ("Quantisierung", "Quant"),
    "col_context": ("Kontext", "Context"),
    "col_gpu_layers": ("GPU-Schichten", "GPU layers"),
    "col_queue": ("Warteschlange", "Queue"),
    "col_parallel": ("Gleichzeitig (laufen/Plätze)", "Parallel (running/slots)"),
    "col_served": ("Beantwortet", "Answered"),
    "col_failed": ("Abgebrochen", "Broken off"),
    "usage": ("Nutzung heute pro Klasse (nur Zahlen, keine Inhalte)", "Usage today per class (counts only, no content)"),
    "col_class": ("Klasse", "Class"),
    "col_users": ("Nutzer", "Users"),
    "col_requests": ("Anfragen", "Requests"),
    "col_tokens": ("Tokens", "Tokens"),
    "users": ("Benutzer", "Users"),
    "col_name": ("Name", "Name"),
    "col_role": ("Rolle", "Role"),
    "col_classes": ("Klassen", "Classes"),
    "add_user": ("Benutzer anlegen", "Add user"),
    "role": ("Rolle", "Role"),
    "class_name": ("Klasse (optional)", "Class (optional)"),
    "import_csv": (
        "Klasse aus CSV importieren (Spalten: name,role,class,password)",
        "Import a class from CSV (columns: name,role,class,password)",
    ),
    "import": ("Importieren", "Import"),
    "reset_password": ("Passwort zurücksetzen", "Reset password"),
    "delete_user": ("Benutzer mit allen Daten löschen", "Delete user with all their data"),
    "user_name": ("Benutzername", "User name"),
    "credentials": ("Zugangsdaten (nur jetzt sichtbar – bitte weitergeben):", "Credentials (shown only now – please pass them on):"),
    "user_deleted": ("„{name}“ und alle Daten sind gelöscht.", "“{name}” and all their data are deleted."),
    "unknown_user": ("Den Benutzer „{name}“ gibt es nicht.", "There is no user “{name}”."),
    "retention_days": ("Aufbewahrung gespeicherter Chats (Tage, 0 = nicht speichern)", "Keep stored chats (days, 0 = do not store)"),
    "save": ("Speichern", "Save"),
    "models_admin": ("Modelle", "Models"),
    "default_model": ("Standardmodell (schulki-chat)", "Default model (schulki-chat)"),
    "role_models": ("Erlaubte Modelle für {role}", "Models allowed for {role}"),
    "role_names": ("Schülerinnen und Schüler|Lehrkräfte", "students|teachers"),
    "add_model_path": (
        "GGUF-Datei hinzufügen (Pfad auf dem Server, z. B. USB-Stick: /media/usb/modell.gguf)",
        "Add a GGUF file (path on the server, e.g. a USB stick: /media/usb/model.gguf)",
    ),
    "add_model_name": ("Name für Nutzer (optional)", "Name users see (optional)"),
    "add_model": ("Prüfen und hinzufügen", "Check and add"),
    "model_added": (
        "„{name}“ ist geprüft und kopiert ({file}). Es erscheint in der Modellauswahl, sobald sein Inferenz-Prozess läuft.",
        "“{name}” is checked and copied ({file}). It appears in the model picker once its inference process runs.",
    ),
    "models_saved": ("Modelleinstellungen gespeichert.", "Model settings saved."),
    "saved": ("Gespeichert.", "Saved."),
    # retention, storage and a user's data
    "data_retention": ("Aufbewahrung weiterer Daten (Tage, mindestens 1)", "Keep other data (days, at least 1)"),
    "document_retention_days": ("Dokumente", "Documents"),
    "transcript_retention_days": ("Transkripte", "Transcripts"),
    "backup_retention_days": ("Sicherungen", "Backups"),
    "export_user": ("Daten des Benutzers exportieren (ZIP)", "Export the user's data (zip)"),
    "export_ready": (
        "Export von „{name}“ bereit (wird nach {hours:g} h gelöscht).",
        "Export of “{name}” ready (deleted after {hours:g} h).",
    ),
    "storage_used": ("Speicherplatz: {used} MB von {quota} MB belegt", "Storage: {used} MB of {quota} MB used"),
    "storage_unlimited": ("Speicherplatz: {used} MB belegt", "Storage: {used} MB used"),
}


class Strings(Mapping):
    """The texts of one language."""

    def __init__(self, lang: str):
        self.lang = lang if lang in LANGUAGES else "de"
        self._index = LANGUAGES.index(self.lang)

    def __getitem__(self, key: str) -> str:
        return STRINGS[key][self._index]

    def __iter__(self) -> Iterator[str]:
        return iter(STRINGS)

    def __len__(self) -> int:
        return len(STRINGS)

    def service(self, name: str) -> str:
        """What the page calls a service (its label in the service registry)."""
        return registry.spec(name).label(self.lang)


def strings(lang: str) -> Strings:
    return Strings(lang)
