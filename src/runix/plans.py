"""Every plan and its limits, in one place. `None` means unlimited."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

PlanName = Literal["hobby", "pro", "enterprise"]


@dataclass(frozen=True)
class Plan:
    name: str
    title: str
    price_per_month_usd: int
    requests_per_minute: int
    deploys_per_hour: int
    projects: int | None
    domains_per_project: int | None
    env_vars_per_project: int | None
    concurrent_builds: int

    def limits(self) -> dict[str, int | None]:
        out = asdict(self)
        for k in ("name", "title", "price_per_month_usd"):
            out.pop(k)
        return out


PLANS: dict[str, Plan] = {
    "hobby": Plan("hobby", "Hobby", 0, 100, 5, 10, 3, 50, 1),
    "pro": Plan("pro", "Pro", 20, 1000, 100, 100, 50, 500, 3),
    "enterprise": Plan("enterprise", "Enterprise", 500, 10_000, 1000, None, None, None, 10),
}

DEFAULT_PLAN = "hobby"


def get_plan(name: str) -> Plan:
    return PLANS.get(name, PLANS[DEFAULT_PLAN])
