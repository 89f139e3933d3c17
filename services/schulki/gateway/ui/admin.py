"""The Admin tab (admins only): health of every node, models and queues, usage per class, user management, chat retention."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import gradio as gr
from starlette.concurrency import run_in_threadpool

from schulki.gateway.accounts.database import ROLES, Account, AccountError, NewAccount
from schulki.gateway.context import Gateway
from schulki.gateway.privacy import retention as retention_rules
from schulki.gateway.privacy.user_data import delete_user_data, export_for_download
from schulki.gateway.ui.agent_admin import build_agent_settings
from schulki.gateway.ui.certificates import build_certificate_warning
from schulki.gateway.ui.common import account_of, as_admin, discard_upload, handles_errors
from schulki.gateway.ui.evaluation import build_evaluation_section
from schulki.gateway.ui.models import build_models_section
from schulki.gateway.ui.task_reads import build_task_reads_section
from schulki.gateway.web.i18n import Strings

DATA_PERIODS = ("document_retention_days", "transcript_retention_days", "backup_retention_days")
T = TypeVar("T")


def credentials_table(s: Strings, created: list[NewAccount]) -> str:
    rows = "\n".join(
        f"| {n.account.name} | {n.account.role} | {', '.join(n.account.classes)} | `{n.password}` | `{n.api_key}` |" for n in created
    )
    return f"{s['credentials']}\n\n| {s['col_name']} | {s['col_role']} | {s['col_classes']} | {s['login_password']} | API-Key |\n|---|---|---|---|---|\n{rows}"


def build_admin_tab(gateway: Gateway, s: Strings, demo: gr.Blocks) -> None:
    refresh = gr.Button(s["refresh"], elem_id="admin-refresh")
    health, models, usage, users = _overview_tables(s)
    forms = _account_forms(s)
    retention, save_retention, periods, save_periods = _retention_rows(s)
    result = gr.Markdown(elem_id="admin-result")
    actions = _AdminActions(gateway, s, forms.export_file)
    model_settings, actions.model_settings_now = build_models_section(gateway, s)
    shown = handles_errors(s)  # AdminOnly for anyone but an admin, and the services' errors, in plain words
    build_certificate_warning(gateway, s, refresh)
    build_agent_settings(gateway, s, refresh)

    outputs = [health, models, usage, users, retention, *model_settings]
    refresh.click(shown(actions.overview), None, outputs, api_name="admin_overview")
    forms.add.click(shown(actions.add_user), [forms.new_name, forms.new_role, forms.new_class], result, api_name="admin_add_user")
    forms.import_button.click(shown(actions.import_class), forms.csv_file, result, api_name="admin_import")
    forms.reset.click(shown(actions.reset_password), forms.target, result, api_name="admin_reset_password")
    forms.remove.click(shown(actions.delete_user), forms.target, result, api_name="admin_delete_user")
    forms.export.click(shown(actions.export_user), forms.target, [result, forms.export_file], api_name="admin_export_user")
    refresh.click(shown(actions.data_periods), None, periods, api_name="admin_data_periods")
    save_periods.click(shown(actions.set_data_periods), periods, [result, *periods], api_name="admin_save_data_periods")
    save_retention.click(shown(actions.set_retention), retention, result, api_name="admin_retention")
    build_evaluation_section(gateway, s)
    build_task_reads_section(gateway, s)


def _overview_tables(s: Strings) -> tuple[gr.Dataframe, gr.Dataframe, gr.Dataframe, gr.Dataframe]:
    """Health of every node, the models and their queues, usage per class, the users."""
    health = gr.Dataframe(headers=[s["col_service"], s["col_node"], s["col_status"]], label=s["health"], interactive=False)
    models = gr.Dataframe(
        headers=[
            s["col_node"],
            s["col_model"],
            s["col_quant"],
            s["col_context"],
            s["col_gpu_layers"],
            s["col_parallel"],
            s["col_queue"],
            s["col_served"],
            s["col_failed"],
        ],
        label=s["models"],
        interactive=False,
    )
    usage = gr.Dataframe(headers=[s["col_class"], s["col_users"], s["col_requests"], s["col_tokens"]], label=s["usage"], interactive=False)
    users = gr.Dataframe(headers=[s["col_name"], s["col_role"], s["col_classes"]], label=s["users"], interactive=False)
    return health, models, usage, users


@dataclass
class _AccountForms:
    new_name: gr.Textbox
    new_role: gr.Dropdown
    new_class: gr.Textbox
    add: gr.Button
    csv_file: gr.File
    import_button: gr.Button
    target: gr.Textbox
    reset: gr.Button
    export: gr.Button
    remove: gr.Button
    export_file: gr.File


def _account_forms(s: Strings) -> _AccountForms:
    """Add a user, import a class list, and reset, export or delete one user."""
    with gr.Accordion(s["add_user"], open=True), gr.Row():
        new_name = gr.Textbox(label=s["user_name"])
        new_role = gr.Dropdown(list(ROLES), value="student", label=s["role"])
        new_class = gr.Textbox(label=s["class_name"])
        add = gr.Button(s["add_user"], variant="primary")
    with gr.Accordion(s["import_csv"], open=False):
        csv_file = gr.File(label="CSV", file_types=[".csv"], type="filepath")
        import_button = gr.Button(s["import"])
    with gr.Accordion(s["reset_password"] + " / " + s["delete_user"], open=False):
        target = gr.Textbox(label=s["user_name"])
        with gr.Row():
            reset = gr.Button(s["reset_password"])
            export = gr.Button(s["export_user"], elem_id="admin-export")
            remove = gr.Button(s["delete_user"], variant="stop")
        export_file = gr.File(label=s["export_user"], interactive=False, visible=False, elem_id="admin-export-file")
    return _AccountForms(new_name, new_role, new_class, add, csv_file, import_button, target, reset, export, remove, export_file)


def _retention_rows(s: Strings) -> tuple[gr.Number, gr.Button, list[gr.Number], gr.Button]:
    """How long chats are kept, and how long documents, transcripts and backups are."""
    with gr.Row():
        retention = gr.Number(label=s["retention_days"], precision=0, minimum=0)
        save_retention = gr.Button(s["save"])
    with gr.Row():
        periods = [gr.Number(label=f"{s['data_retention']}: {s[name]}", precision=0, minimum=1) for name in DATA_PERIODS]
        save_periods = gr.Button(s["save"], elem_id="admin-save-periods")
    return retention, save_retention, periods, save_periods


class _AdminActions:
    """The Admin tab's events; each hands its work to ``Gateway.admin_only``, which refuses anyone but an admin first."""

    def __init__(self, gateway: Gateway, s: Strings, export_file: gr.File) -> None:
        self.gateway = gateway
        self.s = s
        self.export_file = export_file
        self.model_settings_now: Callable[[], list[Any]] = list

    def _admin(self, request: gr.Request, work: Callable[[], T]) -> T:
        return as_admin(self.gateway, self.s, request, work)

    async def overview(self, request: gr.Request) -> list[Any]:
        return await self._admin(request, self._overview)

    async def _overview(self) -> list[Any]:
        gateway, s = self.gateway, self.s
        await gateway.check_health()
        health_rows = [[s.service(name), node.address, node.status] for name, nodes in gateway.nodes().items() for node in nodes]
        model_rows: list[list[object]] = []
        # a model's nodes one under the other: every quant of a model serves under its one name, the quant column tells them apart
        for node in sorted(gateway.inference_nodes(), key=lambda n: (n.model, n.address)):
            info = node.info if node.healthy else None
            if info is None:
                model_rows.append([node.address, node.model or "–", "–", "–", "–", "–", "–", node.served, node.failed])
            else:
                model_rows.append(
                    [
                        node.address,
                        node.model,
                        info.quant,
                        info.context_length,
                        info.gpu_layers,
                        f"{info.running_sequences}/{info.parallel_sequences}",
                        info.queue_length,
                        node.served,
                        node.failed,
                    ]
                )
        usage_rows = [list(row) for row in gateway.accounts.usage_by_class()]
        user_rows = [[a.name, a.role, ", ".join(a.classes)] for a in gateway.accounts.list_users()]
        return [health_rows, model_rows, usage_rows, user_rows, gateway.retention_days(), *self.model_settings_now()]

    async def add_user(self, name: str, role: str, class_name: str, request: gr.Request) -> str:
        classes = [c for c in (class_name or "").split() if c]
        try:
            created = await self._admin(
                request, lambda: run_in_threadpool(self.gateway.accounts.add_user, (name or "").strip(), role, classes)
            )
        except AccountError as error:
            raise gr.Error(str(error)) from error
        return credentials_table(self.s, [created])

    async def import_class(self, path: str | None, request: gr.Request) -> str:
        def read() -> str:
            try:  # the class list (with passwords) does not stay in Gradio's cache
                if not path:
                    raise gr.Error(self.s["no_file"])
                with open(path, encoding="utf-8-sig") as handle:
                    return handle.read()
            finally:
                discard_upload(path)

        text = self._admin(request, read)  # before the file is touched: only an admin's own upload may be deleted here
        try:
            created = await run_in_threadpool(self.gateway.accounts.import_csv, text)
        except AccountError as error:
            raise gr.Error(str(error)) from error
        return credentials_table(self.s, created)

    async def reset_password(self, name: str, request: gr.Request) -> str:
        try:
            created = await self._admin(request, lambda: run_in_threadpool(self.gateway.accounts.reset_password, (name or "").strip()))
        except AccountError as error:
            raise gr.Error(str(error)) from error
        return credentials_table(self.s, [created])

    async def delete_user(self, name: str, request: gr.Request) -> str:
        return await self._admin(request, lambda: self._delete_user(name))

    async def _delete_user(self, name: str) -> str:
        account = self.gateway.accounts.by_name((name or "").strip())
        if account is None:
            raise gr.Error(self.s["unknown_user"].format(name=name))
        await delete_user_data(self.gateway, account)
        return self.s["user_deleted"].format(name=account.name)

    async def export_user(self, name: str, request: gr.Request) -> tuple[str, gr.File]:
        admin = account_of(self.gateway, request, self.s)
        return await self.gateway.admin_only(admin, lambda: self._export_user(admin, name))

    async def _export_user(self, admin: Account, name: str) -> tuple[str, gr.File]:
        gateway = self.gateway
        account = gateway.accounts.by_name((name or "").strip())
        if account is None:
            raise gr.Error(self.s["unknown_user"].format(name=name))
        path = await export_for_download(gateway, admin, account)
        hours = gateway.config.gateway.upload_retention_hours
        # the gateway serves a cached file only to its owner: here the admin who asked for the export
        cached = await self.export_file.async_move_resource_to_block_cache(str(path))
        assert cached is not None, "Gradio returns the cached path of the file it was given"
        gateway.file_owners.add(cached, admin.id)
        return self.s["export_ready"].format(name=account.name, hours=hours), gr.File(value=cached, visible=True)

    def data_periods(self, request: gr.Request) -> list[int]:
        return self._admin(request, lambda: [retention_rules.period_days(self.gateway, name) for name in DATA_PERIODS])

    async def set_data_periods(
        self, documents: float | None, transcripts: float | None, backups: float | None, request: gr.Request
    ) -> tuple[str | int, ...]:
        async def save() -> tuple[str | int, ...]:
            for name, value in zip(DATA_PERIODS, (documents, transcripts, backups), strict=True):
                if value is not None:
                    retention_rules.set_period_days(self.gateway, name, int(value))
            await retention_rules.purge_expired(self.gateway)  # a shorter period applies at once, as for chats
            return self.s["saved"], *self.data_periods(request)

        return await self._admin(request, save)

    def set_retention(self, days: float | None, request: gr.Request) -> str:
        def save() -> str:
            self.gateway.accounts.set_setting("chat_retention_days", str(max(0, int(days or 0))))
            # a shorter period applies at once; 0 deletes every stored chat
            self.gateway.accounts.purge_chats(self.gateway.retention_days())
            return self.s["saved"]

        return self._admin(request, save)
