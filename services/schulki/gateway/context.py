"""The gateway's shared state (settings, accounts, quotas, service clients, the pseudonym secret) and its use cases.

The use cases (chat, embed, transcribe) are the one place where a request is
counted against the user's quotas and sent to a service under the user's
pseudonym; the UI tabs and the /v1 routes call them and only translate input
and output. The request id travels with the context (``logs.request_id``, set
per API request and per UI event), so every service call carries it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from schulki.config import Config
from schulki.embeddings.v1 import embeddings_service_pb2 as embeddings_pb
from schulki.gateway.accounts import Account, Accounts, database_url
from schulki.gateway.chat_models import ChatModels
from schulki.gateway.clients import Services
from schulki.gateway.file_owners import FileOwners
from schulki.gateway.login_limits import LoginLimiter
from schulki.gateway.quotas import Quotas, estimate_prompt_tokens
from schulki.gateway.stores import Stores
from schulki.inference.v1 import inference_service_pb2 as inference_pb
from schulki.transcription.v1 import transcription_service_pb2 as transcription_pb

SESSION_COOKIE = "schulki_session"


def _secret(config: Config) -> bytes:
    if config.gateway.secret_key is not None:
        return config.gateway.secret_key.get_secret_value().encode()
    path = Path(config.data_dir) / "gateway" / "secret"
    private_folder(path.parent)
    try:  # created private from its first byte: no moment in which others could read it
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
    return path.read_text().strip().encode()


def private_folder(path: Path) -> Path:
    """A folder only the gateway's user can enter (accounts, uploads and transcripts hold students' data)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.chmod(0o700)
    return path


@dataclass
class Gateway:
    """Everything the routes and the UI need, built once per app."""

    config: Config
    accounts: Accounts
    quotas: Quotas
    services: Services
    login_limiter: LoginLimiter
    secret: bytes
    models: ChatModels
    file_owners: FileOwners = field(default_factory=FileOwners)
    stores: Stores = field(init=False)
    """The API's vector stores and their files; the tables live in the accounts database."""

    def __post_init__(self) -> None:
        self.stores = Stores(self.accounts.engine)

    @classmethod
    def create(cls, config: Config) -> Gateway:
        accounts = Accounts(database_url(config.gateway.database_url, Path(config.data_dir)))
        services = Services(config)
        models = ChatModels(config, accounts, services)
        services.default_model = models.default  # chats that name no model (translation, documents) use schulki-chat's model
        return cls(
            config=config,
            accounts=accounts,
            quotas=Quotas(config.gateway, accounts),
            services=services,
            login_limiter=LoginLimiter(config.gateway),
            secret=_secret(config),
            models=models,
        )

    def pseudonym(self, account: Account) -> str:
        """A stable id for the services' fairness and quotas that does not reveal who the user is."""
        return hmac.new(self.secret, f"user:{account.id}".encode(), hashlib.sha256).hexdigest()[:20]

    async def chat(
        self,
        account: Account,
        messages: list[dict],
        max_tokens: int,
        temperature: float | None = None,
        stop: Iterable[str] = (),
        seed: int | None = None,
        *,
        admitted: bool = False,
        model: str | None = None,
    ) -> AsyncIterator[inference_pb.ChatResponse]:
        """``services.chat`` with the user's pseudonym and a token reservation: prompt and longest answer are set aside
        against the daily quota before the request starts, and settled with the real usage when it ends.
        ``admitted``: the request was counted already (``quotas.admit``) by the caller."""
        reservation = self.quotas.reserve(account, estimate_prompt_tokens(messages), max_tokens, count_request=not admitted)
        try:
            async for event in self.services.chat(
                messages, self.pseudonym(account), reservation.max_tokens, temperature, stop, seed, model=model
            ):
                if event.HasField("finish"):
                    reservation.settle(event.finish.usage.total_tokens)
                else:
                    reservation.streamed = True
                yield event
        finally:
            reservation.release()

    async def embed(self, account: Account, texts: list[str]) -> embeddings_pb.EmbedResponse:
        """Embed texts for a user: one request against the quota, and their tokens counted once the vectors are back."""
        self.quotas.admit(account)
        response = await self.services.embed(texts, self.pseudonym(account))
        self.quotas.add_tokens(account, sum(embedding.token_count for embedding in response.embeddings))
        return response

    async def transcribe(
        self, account: Account, chunks: AsyncIterator[bytes] | Iterable[bytes], file_name: str, language: str = ""
    ) -> AsyncIterator[transcription_pb.TranscribeResponse]:
        """Transcribe a recording for a user (one request against the quota), streaming language, segments and summary."""
        self.quotas.admit(account)
        async for event in self.services.transcribe(chunks, file_name, self.pseudonym(account), language):
            yield event

    async def search(self, account: Account, workspace: str, query: str, top_k: int = 4) -> list:
        """Search a workspace for a user (one request against the quota); the caller checked that the user may read it."""
        self.quotas.admit(account)
        return await self.services.search(workspace, query, top_k=top_k)

    def ingest(self, account: Account, workspace: str, path: Path, file_name: str) -> AsyncIterator:
        """Store an uploaded file in a workspace for a user (one request against the quota, counted now): progress, then
        the document. The caller checked that the user may write the workspace; its storage quota is the service's."""
        self.quotas.admit(account)
        return self.services.ingest(workspace, path, file_name, self.pseudonym(account))

    def ingest_url(self, account: Account, workspace: str, url: str) -> AsyncIterator:
        """Store the web page at url in a workspace for a user, as ``ingest`` stores a file."""
        self.quotas.admit(account)
        return self.services.ingest_url(workspace, url, self.pseudonym(account))

    def account_from_headers(self, cookies: dict, authorization: str | None) -> Account | None:
        """The user of a request: the login cookie, or an API key as ``Authorization: Bearer``."""
        token = cookies.get(SESSION_COOKIE)
        if token:
            account = self.accounts.session_user(token)
            if account:
                return account
        if authorization and authorization.lower().startswith("bearer "):
            return self.accounts.by_api_key(authorization[7:].strip())
        return None

    @property
    def files_root(self) -> Path:
        """Per-user download files (transcripts); each user's lie under their own id."""
        return private_folder(Path(self.config.data_dir) / "gateway" / "files").resolve()

    def user_files(self, account: Account) -> Path:
        return private_folder(self.files_root / str(account.id))

    def retention_days(self) -> int:
        return int(self.accounts.get_setting("chat_retention_days", str(self.config.gateway.chat_retention_days)))
