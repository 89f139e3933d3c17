"""The Admin tab's model section: the default model behind schulki-chat, the models each role may use, and adding a GGUF file.

Adding a file here does what ``schulki models add`` does (checks, copies into
the models folder, records it); the path is one on the gateway machine, such
as a USB stick, because chat models are gigabytes and do not belong in a
browser upload.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import gradio as gr
from starlette.concurrency import run_in_threadpool

from schulki.gateway.context import Gateway
from schulki.gateway.nodes.chat_models import RESTRICTED_ROLES
from schulki.gateway.ui.common import as_admin, handles_errors
from schulki.gateway.web.i18n import Strings


def build_models_section(gateway: Gateway, s: Strings) -> tuple[list, Callable[[], list]]:
    """The section's components; returns the outputs the admin overview fills and the function that fills them."""
    role_labels = s["role_names"].split("|")
    with gr.Accordion(s["models_admin"], open=True):
        default = gr.Dropdown([], label=s["default_model"], elem_id="admin-default-model", allow_custom_value=True)
        role_boxes = [
            gr.CheckboxGroup([], label=s["role_models"].format(role=label), elem_id=f"admin-models-{role}")
            for role, label in zip(RESTRICTED_ROLES, role_labels, strict=True)
        ]
        save = gr.Button(s["save"], elem_id="admin-models-save")
        with gr.Row():
            path = gr.Textbox(label=s["add_model_path"], elem_id="admin-model-path", scale=3)
            name = gr.Textbox(label=s["add_model_name"], elem_id="admin-model-name", scale=1)
            add = gr.Button(s["add_model"], elem_id="admin-model-add", scale=1)
        result = gr.Markdown(elem_id="admin-models-result")

    def current() -> list[gr.Dropdown | gr.CheckboxGroup]:
        names = gateway.models.names()
        boxes = []
        for role in RESTRICTED_ROLES:
            permitted = gateway.models.role_models(role)
            boxes.append(gr.CheckboxGroup(choices=names, value=names if permitted is None else [n for n in names if n in permitted]))
        return [gr.Dropdown(choices=names, value=gateway.models.default()), *boxes]

    @handles_errors(s)
    def save_models(chosen_default: str | None, student_models: list[str], teacher_models: list[str], request: gr.Request) -> str:
        # one parameter per role of RESTRICTED_ROLES: Gradio hands the request only to named parameters
        def save() -> str:
            if chosen_default:
                gateway.models.set_default(chosen_default)
            names = set(gateway.models.names())
            for role, models in zip(RESTRICTED_ROLES, (student_models, teacher_models), strict=True):
                picked = [m for m in (models or []) if m in names]
                gateway.models.set_role_models(role, None if set(picked) == names else picked)
            return s["models_saved"]

        return as_admin(gateway, s, request, save)

    @handles_errors(s)
    async def add_model(source: str, wanted_name: str, request: gr.Request) -> str:
        return await as_admin(gateway, s, request, lambda: install_model(source, wanted_name))

    async def install_model(source: str, wanted_name: str) -> str:
        from schulki.models.defaults import models_dir
        from schulki.models.install import ModelCheckError
        from schulki.models.install import add_model as install

        if not (source or "").strip():
            raise gr.Error(s["no_file"])
        try:
            entry = await run_in_threadpool(install, Path(source.strip()), models_dir(gateway.config), (wanted_name or "").strip() or None)
        except (ModelCheckError, OSError) as error:
            raise gr.Error(str(error)) from error
        return s["model_added"].format(name=entry.name, file=entry.file)

    save.click(save_models, [default, *role_boxes], result, api_name="admin_models_save")
    add.click(add_model, [path, name], result, api_name="admin_model_add")
    return [default, *role_boxes], current
