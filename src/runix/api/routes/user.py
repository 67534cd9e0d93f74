"""/user: the signed-in account."""

from __future__ import annotations

from fastapi import APIRouter

from runix.api.deps import CurrentAccount
from runix.api.errors import AUTHED
from runix.schemas import UserPublic

router = APIRouter(tags=["account"])


@router.get("/user", response_model=UserPublic, responses=AUTHED)
async def get_user(account: CurrentAccount) -> UserPublic:
    return UserPublic.model_validate(account)
