"""The Admin tab (admins only): health of every node, models and queues, usage per class, user management, chat retention."""

from __future__ import annotations

import gradio as gr
from starlette.concurrency import run_in_threadpool

from schulki.gateway import retention as retention_rules
from schulki.gateway.accounts import ROLES, AccountError, NewAccount
from schulki.gateway.context import Gateway
from schulki.gateway.i18n import Strings
from schulki.gateway.ui.common import account_of, discard_upload, handles_errors
from schulki.gateway.ui.evaluation import build_evaluation_section
from schulki.gateway.ui.models import build_models_section
from schulki.gateway.user_data import delete_user_data, export_for_download

DATA_PERIODS = ("document_retention_days", "transcript_retention_days", "backup_retention_days")


def credentials_table(s: Strings, created: list[NewAccount]) -> str:
    rows = "\n".join(
        f"| {n.account.name} | {n.account.role} | {', '.join(n.account.classes)} | `{n.password}` | `{n.api_key}` |" for n in created
    )
    return f"{s['credentials']}\n\n| {s['col_name']} | {s['col_role']} | {s['col_classes']} | {s['login_password']} | API-Key |\n|---|---|---|---|---|\n{rows}"


def build_admin_tab(gateway: Gateway, s: Strings, demo: gr.Blocks) -> None:
    refresh = gr.Button(s["refresh"], elem_id="admin-refresh")
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
    with gr.Row():
        retention = gr.Number(label=s["retention_days"], precision=0, minimum=0)
        save_retention = gr.Button(s["save"])
    with gr.Row():
        periods = [gr.Number(label=f"{s['data_retention']}: {s[name]}", precision=0, minimum=1) for name in DATA_PERIODS]
        save_periods = gr.Button(s["save"], elem_id="admin-save-periods")
    result = gr.Markdown(elem_id="admin-result")

    def require_admin(request: gr.Request):
        account = account_of(gateway, request, s)
        if account.role != "admin":
            raise gr.Error(s["admin_only"])
        return account

    model_settings, model_settings_now = build_models_section(gateway, s, require_admin)

    async def overview(request: gr.Request):
        require_admin(request)
        await gateway.services.check_health()
        health_rows = [[s.service(name), node.address, node.status] for name, pool in gateway.services.pools.items() for node in pool.nodes]
        model_rows = []
        # a model's nodes one under the other: every quant of a model serves under its one name, the quant column tells them apart
        for node in sorted(gateway.services.inference_nodes(), key=lambda n: (n.model, n.address)):
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
        return [health_rows, model_rows, usage_rows, user_rows, gateway.retention_days(), *model_settings_now()]

    async def add_user(name: str, role: str, class_name: str, request: gr.Request):
        require_admin(request)
        try:
            created = await run_in_threadpool(
                gateway.accounts.add_user, (name or "").strip(), role, [c for c in (class_name or "").split() if c]
            )
        except AccountError as error:
            raise gr.Error(str(error)) from error
        return credentials_table(s, [created])

    async def import_class(path: str | None, request: gr.Request):
        require_admin(request)  # before the file is touched: only an admin's own upload may be deleted here
        try:  # the class list (with passwords) does not stay in Gradio's cache
            if not path:
                raise gr.Error(s["no_file"])
            with open(path, encoding="utf-8-sig") as handle:
                text = handle.read()
        finally:
            discard_upload(path)
        try:
            created = await run_in_threadpool(gateway.accounts.import_csv, text)
        except AccountError as error:
            raise gr.Error(str(error)) from error
        return credentials_table(s, created)

    async def reset_password(name: str, request: gr.Request):
        require_admin(request)
        try:
            created = await run_in_threadpool(gateway.accounts.reset_password, (name or "").strip())
        except AccountError as error:
            raise gr.Error(str(error)) from error
        return credentials_table(s, [created])

    @handles_errors(s)
    async def delete_user(name: str, request: gr.Request):
        require_admin(request)
        account = gateway.accounts.by_name((name or "").strip())
        if account is None:
            raise gr.Error(s["unknown_user"].format(name=name))
        await delete_user_data(gateway, account)
        return s["user_deleted"].format(name=account.name)

    @handles_errors(s)
    async def export_user(name: str, request: gr.Request):
        admin = require_admin(request)
        account = gateway.accounts.by_name((name or "").strip())
        if account is None:
            raise gr.Error(s["unknown_user"].format(name=name))
        path = await export_for_download(gateway, admin, account)
        hours = gateway.config.gateway.upload_retention_hours
        # the gateway serves a cached file only to its owner: here the admin who asked for the export
        cached = await export_file.async_move_resource_to_block_cache(str(path))
        assert cached is not None, "Gradio returns the cached path of the file it was given"
        gateway.file_owners.add(cached, admin.id)
        return s["export_ready"].format(name=account.name, hours=hours), gr.File(value=cached, visible=True)

    def data_periods(request: gr.Request):
        require_admin(request)
        return [retention_rules.period_days(gateway, name) for name in DATA_PERIODS]

    async def set_data_periods(documents, transcripts, backups, request: gr.Request):
        require_admin(request)
        for name, value in zip(DATA_PERIODS, (documents, transcripts, backups), strict=True):
            if value is not None:
                retention_rules.set_period_days(gateway, name, int(value))
        await retention_rules.purge_expired(gateway)  # a shorter period applies at once, as for chats
        return s["saved"], *data_periods(request)

    def set_retention(days, request: gr.Request):
        require_admin(request)
        gateway.accounts.set_setting("chat_retention_days", str(max(0, int(days or 0))))
        gateway.accounts.purge_chats(gateway.retention_days())  # a shorter period applies at once; 0 deletes every stored chat
        return s["saved"]

    outputs = [health, models, usage, users, retention, *model_settings]
    refresh.click(overview, None, outputs, api_name="admin_overview")
    add.click(add_user, [new_name, new_role, new_class], result, api_name="admin_add_user")
    import_button.click(import_class, csv_file, result, api_name="admin_import")
    reset.click(reset_password, target, result, api_name="admin_reset_password")
    remove.click(delete_user, target, result, api_name="admin_delete_user")
    export.click(export_user, target, [result, export_file], api_name="admin_export_user")
    refresh.click(data_periods, None, periods, api_name="admin_data_periods")
    save_periods.click(set_data_periods, periods, [result, *periods], api_name="admin_save_data_periods")
    save_retention.click(set_retention, retention, result, api_name="admin_retention")
    build_evaluation_section(gateway, s, require_admin)
