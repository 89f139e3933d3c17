"""The gateway's shared state: settings, accounts, quotas, service clients and the pseudonym secret."""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

from schulki.config import Config
from schulki.gateway.accounts import Account, Accounts, database_url
from schulki.gateway.chat_models import ChatModels
from schulki.gateway.clients import Services
from schulki.gateway.file_owners import FileOwners
from schulki.gateway.quotas import LoginLimiter, Quotas, estimate_prompt_tokens
from schulki.gateway.stores import Stores

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

    async def chat(self, account: Account, messages: list[dict], max_tokens: int, *args, admitted: bool = False, **kwargs) -> AsyncIterator:
        """``services.chat`` with the user's pseudonym and a token reservation: prompt and longest answer are set aside
        against the daily quota before the request starts, and settled with the real usage when it ends.
        ``admitted``: the request was counted already (``quotas.admit``) by the caller."""
        reservation = self.quotas.reserve(account, estimate_prompt_tokens(messages), max_tokens, count_request=not admitted)
        try:
            async for event in self.services.chat(messages, self.pseudonym(account), reservation.max_tokens, *args, **kwargs):
                if event.HasField("finish"):
                    reservation.settle(event.finish.usage.total_tokens)
                else:
                    reservation.streamed = True
                yield event
        finally:
            reservation.release()

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
