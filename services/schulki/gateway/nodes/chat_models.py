"""Which chat models a user may pick, what ``schulki-chat`` points at, and the model a class uses for a lesson.

The models come from the inference nodes (``Services.chat_models``); the
choices live in the accounts database's settings, so every gateway of a school
sees the same ones and they survive a restart (each gateway reads them at most
two seconds old, ``Accounts.recent_setting``: they are read for every chat):

- ``chat_default_model``: the model the alias ``schulki-chat`` points at (the
  Admin tab sets it; until then ``gateway.default_model``, else the first model
  that is not the demo model);
- ``chat_models_<role>``: a JSON list of the models a role may use; missing
  means every model (admins may always use every model);
- ``class_model_<class>``: the model a teacher set for a class's lesson;
  its students may use it even when their role may not, and it is their
  preselected model.

Every quant of one catalog model is served under the model's one name; a name
from before with the quant (``gemma-3-270m-q4_k_m``) in a setting or a request
stands for that name (``models.served.canonical_name``).
"""

from __future__ import annotations

import json

from schulki.config import Config
from schulki.gateway.accounts.database import CLASS_PATTERN, Account, Accounts
from schulki.gateway.nodes.clients import ServiceDown, Services
from schulki.models.served import canonical_name, describe, is_demo

ALIAS = "schulki-chat"
RESTRICTED_ROLES = ("student", "teacher")


class ModelChoiceError(ValueError):
    """A model that does not exist here (``unknown``) or that this user may not use; the message is German with English."""

    def __init__(self, message: str, unknown: bool):
        super().__init__(message)
        self.unknown = unknown


class ChatModels:
    """The gateway's rules for picking a chat model."""

    def __init__(self, config: Config, accounts: Accounts, services: Services):
        self.config = config
        self.accounts = accounts
        self._services = services
        self.measured_tokens_per_s: dict[str, float] = {}
        """Decoding speed per model as this gateway measured it on the school's own hardware (the picker shows it)."""

    # -- what exists ----------------------------------------------------------

    def names(self) -> list[str]:
        """Every chat model of the school, each once, in name order."""
        return self._services.chat_models()

    def _file_of(self, name: str) -> str:
        for node in self._services.inference_nodes():
            if node.model == name and node.info is not None:
                return node.info.file_name
        return ""

    def is_demo(self, name: str) -> bool:
        return is_demo(name, self._file_of(name))

    def only_demo(self) -> bool:
        """True while every chat model here is the built-in demo model (the chat tab then says so)."""
        names = self.names()
        return bool(names) and all(self.is_demo(name) for name in names)

    def default(self) -> str | None:
        """The model schulki-chat points at."""
        names = self.names()
        for wanted in (self.accounts.recent_setting("chat_default_model", ""), self.config.gateway.default_model):
            if wanted and canonical_name(wanted) in names:
                return canonical_name(wanted)
        real = [name for name in names if not self.is_demo(name)]
        return next(iter(real or names), None)

    def set_default(self, name: str) -> None:
        name = canonical_name(name)
        if name not in self.names():
            raise ModelChoiceError(f"Das Modell „{name}“ gibt es hier nicht. (There is no model {name!r}.)", unknown=True)
        self.accounts.set_setting("chat_default_model", name)

    # -- who may use what ------------------------------------------------------

    def role_models(self, role: str) -> list[str] | None:
        """The models a role may use, or None for every model."""
        raw = self.accounts.recent_setting(f"chat_models_{role}", "")
        return [canonical_name(name) for name in json.loads(raw)] if raw else None

    def set_role_models(self, role: str, names: list[str] | None) -> None:
        if role not in RESTRICTED_ROLES:
            raise ModelChoiceError(
                f"Für die Rolle „{role}“ lässt sich nichts einschränken. (Only student and teacher can be restricted.)", unknown=False
            )
        self.accounts.set_setting(f"chat_models_{role}", "" if names is None else json.dumps(sorted({canonical_name(n) for n in names})))

    def class_model(self, class_name: str) -> str | None:
        name = canonical_name(self.accounts.recent_setting(f"class_model_{class_name}", ""))
        return name if name in self.names() else None

    def set_class_model(self, teacher: Account, class_name: str, name: str | None) -> None:
        """A teacher (or admin) sets the model a class uses for a lesson; None goes back to the school's default."""
        if (
            not CLASS_PATTERN.match(class_name or "")
            or teacher.role == "student"
            or (teacher.role == "teacher" and class_name not in teacher.classes)
        ):
            raise ModelChoiceError("Du kannst nur für deine eigenen Klassen ein Modell wählen. (Only for your own classes.)", unknown=False)
        name = canonical_name(name) if name is not None else None
        if name is not None and name not in self.allowed(teacher):
            raise ModelChoiceError(
                f"Das Modell „{name}“ kannst du nicht wählen. (You may not use model {name!r}.)", unknown=name not in self.names()
            )
        self.accounts.set_setting(f"class_model_{class_name}", name or "")

    def allowed(self, account: Account) -> list[str]:
        """The models this user may pick, in name order."""
        names = self.names()
        permitted = None if account.role == "admin" else self.role_models(account.role)
        if permitted is None:
            return names
        lesson = {self.class_model(c) for c in account.classes} - {None}
        return [name for name in names if name in permitted or name in lesson]

    def preselected(self, account: Account) -> str | None:
        """The model a user's chat starts with: their class's lesson model, else the school's default, else the first they may use."""
        allowed = self.allowed(account)
        for class_name in account.classes:
            lesson = self.class_model(class_name)
            if lesson in allowed:
                return lesson
        default = self.default()
        return default if default in allowed else next(iter(allowed), None)

    def resolve(self, account: Account, requested: str | None) -> str:
        """The model a request goes to: the named one, or for none and schulki-chat the user's preselected one."""
        if requested in (None, "", ALIAS):
            chosen = self.preselected(account)
            if chosen is None:  # no inference node has answered yet: the service is down, not the name wrong
                raise ServiceDown("inference")
            return chosen
        requested = canonical_name(requested)
        if requested not in self.names():
            raise ModelChoiceError(
                f"Das Modell „{requested}“ gibt es hier nicht. (The model {requested!r} does not exist here.)", unknown=True
            )
        if requested not in self.allowed(account):
            raise ModelChoiceError(
                f"Das Modell „{requested}“ ist für dich nicht freigegeben; frag deine Lehrkraft oder den Admin. "
                f"(Your role may not use the model {requested!r}.)",
                unknown=False,
            )
        return requested

    # -- what users read -------------------------------------------------------

    def description(self, name: str | None) -> str:
        if not name:
            return ""
        name = canonical_name(name)
        size, file_name = 0, ""
        for node in self._services.inference_nodes():
            if node.model == name and node.info is not None:
                size, file_name = node.info.weights_bytes, node.info.file_name
                break
        return describe(name, file_name, size, self.measured_tokens_per_s.get(name))

    def record_speed(self, name: str, tokens: int, seconds: float) -> None:
        """Remember how fast a model answered here (a moving average), for the picker's description."""
        if tokens < 8 or seconds <= 0:
            return
        speed = tokens / seconds
        old = self.measured_tokens_per_s.get(name)
        self.measured_tokens_per_s[name] = speed if old is None else 0.8 * old + 0.2 * speed
