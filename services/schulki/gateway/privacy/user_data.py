"""One user's data as a whole: deleting all of it, and handing them a copy (GDPR right of access).

What belongs to a user:

- the account row with its memberships, login sessions, usage counts and
  stored chats (accounts database);
- the private workspace ``u-<id>`` and those they created through the API
  (``u-<id>-<random>``) with their documents, their text and vectors
  (retrieval service, embedded store or Weaviate), and their uploads through ``/v1/files``;
- their transcripts under ``<data>/gateway/files/<id>/``;
- their chats in teachers' tasks, and the log of teachers' reads of them
  (accounts database; a teacher's tasks go with the teacher's account).

Documents in a class workspace belong to the class: teachers put teaching
material there, and it stays when a teacher leaves (schulki does not record
who uploaded a class document). Uploads in the gateway's cache carry no
owner; they are deleted within ``gateway.upload_retention_hours`` in any
case. Backups cannot be edited: a deleted user's documents leave them when
the backups expire (``backup_retention_days``), and a workspace that a
restore brings back for a deleted account is removed by the next purge.
"""

from __future__ import annotations

import io
import json
import re
import shutil
import time
import uuid
import zipfile
from pathlib import Path

from starlette.concurrency import run_in_threadpool

from schulki.gateway.accounts.database import Account
from schulki.gateway.context import Gateway
from schulki.gateway.documents.stored_files import delete_user_files
from schulki.gateway.privacy.retention import EXPORTS
from schulki.retrieval.v1 import retrieval_service_pb2 as retrieval_pb

README = """Deine Daten bei schulki (your data at schulki)

konto.json        Konto, Rolle, Klassen, Anlagedatum, Nutzung pro Tag (account, role, classes, created, usage per day)
chats.json        gespeicherte Chats mit allen Nachrichten (stored chats with every message)
aufgaben.json     deine Chats in Aufgaben und wann welche Lehrkraft sie gelesen hat (task chats and teachers' reads of them)
dokumente.json    Dokumente in "Meine Dokumente" und deinen eigenen Arbeitsbereichen (documents in your own workspaces)
dokumente/        der gespeicherte Text jedes Dokuments, Abschnitt für Abschnitt (the stored text of each document)
transkripte/      deine Transkripte (your transcripts)
hinweise.json     Hinweise der Moderation zu dir: wann, Bereich, Folge (moderation flags about you)

Passwort und API-Key sind nur als Hash gespeichert und deshalb nicht enthalten.
(Password and API key are stored only as hashes and are therefore not included.)
"""


async def delete_user_data(gateway: Gateway, account: Account) -> None:
    """Everything of one user, everywhere; the account goes last, so a failure leaves it to delete again.

    Raises ServiceDown or grpc.RpcError when the retrieval service cannot
    delete the private workspace; then nothing else has been deleted yet.
    """
    await gateway.delete_workspace(account.own_workspace)
    for store in gateway.stores.owned(account.id):  # the workspaces the user created through /v1/vector_stores
        await gateway.delete_workspace(store.workspace)
        gateway.stores.remove(store.workspace)
    await run_in_threadpool(shutil.rmtree, gateway.files_root / str(account.id), True)
    await run_in_threadpool(delete_user_files, gateway, account)
    gateway.file_owners.forget_account(account.id)
    await run_in_threadpool(gateway.moderation.flags.forget_user, account.id)
    await run_in_threadpool(gateway.accounts.delete_user, account.id)


def _file_name(index: int, source: str) -> str:
    stem = re.sub(r"[^\w.-]+", "_", Path(source).name or "dokument")[:80]
    return f"{index:03d}-{stem}.txt"


def _document_text(response: retrieval_pb.ExportDocumentResponse) -> str:
    """A document's stored chunks as readable text, each with its place in the document."""
    parts = []
    for chunk in response.chunks:
        where = ", ".join(x for x in (f"Seite {chunk.page}" if chunk.page else "", chunk.section) if x)
        parts.append(f"--- Abschnitt {chunk.chunk_index + 1}{' (' + where + ')' if where else ''} ---\n{chunk.text}")
    return "\n\n".join(parts) + "\n"


async def export_user_data(gateway: Gateway, account: Account) -> bytes:
    """A zip with everything schulki keeps about the user (see README above).

    Raises ServiceDown or grpc.RpcError when the retrieval service cannot be
    asked for the documents: an export without them would be incomplete.
    """
    facts = await run_in_threadpool(gateway.accounts.export_data, account.id)
    stores = [(account.own_workspace, "Meine Dokumente")] + [(s.workspace, s.name) for s in gateway.stores.owned(account.id)]
    documents, texts, store_names = [], [], []
    for workspace, store_name in stores:  # the private workspace, then those the user made through /v1/vector_stores
        for document in await gateway.list_documents(account, workspace):
            documents.append(document)
            texts.append(await gateway.export_document(account, workspace, document.document_id))
            store_names.append(store_name)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("LIESMICH.txt", README)
        archive.writestr("konto.json", json.dumps({**facts["account"], "usage": facts["usage"]}, ensure_ascii=False, indent=2))
        archive.writestr("chats.json", json.dumps(facts["chats"], ensure_ascii=False, indent=2))
        flags = await run_in_threadpool(gateway.moderation.flags.of_user, account.id)
        archive.writestr("hinweise.json", json.dumps(flags, ensure_ascii=False, indent=2))
        tasks = await run_in_threadpool(gateway.oversight.export, account.id)
        archive.writestr("aufgaben.json", json.dumps(tasks, ensure_ascii=False, indent=2))
        listing = []
        for index, (document, text, store_name) in enumerate(zip(documents, texts, store_names, strict=True), start=1):
            name = _file_name(index, document.source)
            listing.append(
                {
                    "file": f"dokumente/{name}",
                    "source": document.source,
                    "workspace": store_name,
                    "format": document.format,
                    "pages": document.page_count,
                    "size_bytes": document.size_bytes,
                    "chunks": document.chunk_count,
                    "uploaded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(document.created_at)),
                }
            )
            archive.writestr(f"dokumente/{name}", _document_text(text))
        archive.writestr("dokumente.json", json.dumps(listing, ensure_ascii=False, indent=2))
        folder = gateway.files_root / str(account.id)
        if folder.is_dir():
            for path in sorted(folder.rglob("*")):
                relative = path.relative_to(folder)
                if path.is_file() and not path.is_symlink() and relative.parts[0] != EXPORTS:
                    archive.write(path, f"transkripte/{relative.as_posix()}")
    return buffer.getvalue()


async def export_for_download(gateway: Gateway, admin: Account, account: Account) -> Path:
    """Write the user's export where the admin's browser may fetch it; the purge deletes it after upload_retention_hours."""
    data = await export_user_data(gateway, account)
    folder = gateway.user_files(admin) / EXPORTS / uuid.uuid4().hex
    folder.mkdir(parents=True)
    target = folder / f"schulki-daten-{account.name}.zip"
    target.write_bytes(data)
    target.chmod(0o600)
    return target
