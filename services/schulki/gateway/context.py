"""The gateway's shared state: settings, accounts, quotas, service clients and the pseudonym secret."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from pathlib import Path

from schulki.config import Config
from schulki.gateway.accounts import Account, Accounts, database_url
from schulki.gateway.chat_models import ChatModels
from schulki.gateway.clients import Services
from schulki.gateway.quotas import LoginLimiter, Quotas

SESSION_COOKIE = "schulki_session"


def _secret(config: Config) -> bytes:
    if config.gateway.secret_key is not None:
        return config.gateway.secret_key.get_secret_value().encode()
    path = Path(config.data_dir) / "gateway" / "secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


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
            login_limiter=LoginLimiter(config.gateway.login_attempts, config.gateway.login_window_s),
            secret=_secret(config),
            models=models,
        )

    def pseudonym(self, account: Account) -> str:
        """A stable id for the services' fairness and quotas that does not reveal who the user is."""
        return hmac.new(self.secret, f"user:{account.id}".encode(), hashlib.sha256).hexdigest()[:20]

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
        root = Path(self.config.data_dir) / "gateway" / "files"
        root.mkdir(parents=True, exist_ok=True)
        return root.resolve()

    def user_files(self, account: Account) -> Path:
        folder = self.files_root / str(account.id)
        folder.mkdir(parents=True, exist_ok=True)
        return folder

    def retention_days(self) -> int:
        return int(self.accounts.get_setting("chat_retention_days", str(self.config.gateway.chat_retention_days)))
