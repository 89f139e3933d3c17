"""GET /v1/moderation/flags: the moderation flags a teacher (her classes' students) or an admin (everyone) may see."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from schulki.gateway.api.deps import AccountDep, GatewayDep

router = APIRouter(prefix="/v1")


class FlagItem(BaseModel):
    """One flag: who, when, which category and outcome, question or answer; the text only where the school keeps it."""

    object: Literal["moderation.flag"] = "moderation.flag"
    user: str
    classes: list[str]
    created_at: int
    category: str
    outcome: str
    direction: str
    text: str | None = None


class FlagList(BaseModel):
    object: Literal["list"] = "list"
    data: list[FlagItem]


@router.get("/moderation/flags")
async def moderation_flags(gateway: GatewayDep, account: AccountDep) -> FlagList:
    """The newest flags first; 403 (``teachers_only``) for a student."""
    flags = await run_in_threadpool(gateway.moderation_flags, account)
    return FlagList(
        data=[
            FlagItem(
                user=f.user,
                classes=list(f.classes),
                created_at=f.at,
                category=f.category,
                outcome=f.outcome,
                direction=f.direction,
                text=f.text,
            )
            for f in flags
        ]
    )
