"""What an account uses of its plan's disk, read from the database. The API counts it to refuse an upload, the
worker to size a build's room, the billing page to show it: one count for all three."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from runix.db.models import Deployment
from runix.plans import get_plan
from runix.settings import Settings
from runix.statuses import WITH_RELEASE


def disk_used(s: Session, account_id: str) -> int:
    """Bytes the account's sources and built releases take: what the plan's disk quota counts (build caches have
    a quota of their own)."""
    total = 0
    for source_bytes, status, meta in s.execute(select(Deployment.source_bytes, Deployment.status, Deployment.meta)
                                                .where(Deployment.account_id == account_id)):
        total += source_bytes or 0
        if status in WITH_RELEASE:
            total += int((meta or {}).get("release_bytes", 0))
    return total


def disk_quotas_mb(settings: Settings, plan_name: str) -> tuple[int, int]:
    """The plan's disk quotas (sources and releases; build caches), unless the server sets them for every plan."""
    plan = get_plan(plan_name)
    return settings.disk_quota_mb or plan.disk_mb, settings.build_cache_quota_mb or plan.build_cache_mb
