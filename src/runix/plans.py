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
    # What one app (all its processes together) may use: memory with swap, processes, CPU weight, /tmp (counted in
    # its memory), and each build likewise.
    app_memory_mb: int
    app_max_processes: int
    app_cpu_weight: int  # relative share of CPU time under contention (cgroup cpu weight; 100 = the default)
    app_tmp_mb: int
    build_memory_mb: int
    build_max_processes: int
    # Disk: uploaded sources plus built releases of the account, and its build caches (least recently used go first).
    disk_mb: int
    build_cache_mb: int

    def limits(self) -> dict[str, int | None]:
        out = asdict(self)
        for k in ("name", "title", "price_per_month_usd"):
            out.pop(k)
        return out


PLANS: dict[str, Plan] = {
    "hobby": Plan("hobby", "Hobby", 0, 100, 5, 10, 3, 50, 1,
                  app_memory_mb=512, app_max_processes=128, app_cpu_weight=100, app_tmp_mb=64,
                  build_memory_mb=2048, build_max_processes=256, disk_mb=2048, build_cache_mb=1024),
    "pro": Plan("pro", "Pro", 20, 1000, 100, 100, 50, 500, 3,
                app_memory_mb=1024, app_max_processes=256, app_cpu_weight=200, app_tmp_mb=256,
                build_memory_mb=4096, build_max_processes=512, disk_mb=20_480, build_cache_mb=5120),
    "enterprise": Plan("enterprise", "Enterprise", 500, 10_000, 1000, None, None, None, 10,
                       app_memory_mb=4096, app_max_processes=1024, app_cpu_weight=400, app_tmp_mb=1024,
                       build_memory_mb=8192, build_max_processes=1024, disk_mb=102_400, build_cache_mb=20_480),
}

DEFAULT_PLAN = "hobby"


def get_plan(name: str) -> Plan:
    return PLANS.get(name, PLANS[DEFAULT_PLAN])
