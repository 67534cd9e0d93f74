"""The running platform's parts, built once from settings and handed to the API, dashboard and workers."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import structlog

from runix.auth.mailers import Mailer, make_mailer
from runix.crypto import Vault, load_or_create_key
from runix.db.session import Database
from runix.layout import Layout
from runix.pipeline.cells import CellPool, make_pool
from runix.ratelimit import RateLimiter
from runix.settings import Settings

log = structlog.get_logger("runix")


@dataclass
class Runix:
    settings: Settings
    layout: Layout
    db: Database
    vault: Vault
    mailer: Mailer
    limiter: RateLimiter
    # The cells (uid, cgroup, network namespace) tenant builds and apps run in; None without the sandbox.
    cells: CellPool | None = None
    # The deploy pipeline plugs itself in here (see runix.pipeline); None until it is started.
    deployer: Any = None
    # Called after anything that changes which host serves which deployment (promote, domain verified, ...).
    route_listeners: list[Callable[[], None]] = field(default_factory=list)

    @classmethod
    def from_settings(cls, settings: Settings, *, migrate: bool = True) -> Runix:
        layout = Layout(settings.data_dir.resolve())
        layout.ensure()
        # Before anything else: a server that cannot isolate tenants refuses to start (IsolationUnavailable), and
        # one told to run without isolation says so loudly on every start.
        cells = make_pool(uid_base=settings.sandbox_uid_base, subnet=settings.sandbox_subnet) if settings.sandbox \
            else None
        if not settings.sandbox:
            log.warning("RUNIX_SANDBOX=false: builds and apps run as root on the host, with the server's network "
                        "and files in reach. Only for trusted code on a development machine.")
        db = Database(settings.sqlalchemy_url)
        if migrate:
            db.migrate()
        layout.protect_database()
        return cls(
            settings=settings,
            layout=layout,
            db=db,
            vault=Vault(load_or_create_key(settings.secret_key, layout.secret_key_file)),
            mailer=make_mailer(settings.smtp_url, layout.maildir, settings.mail_from),
            limiter=RateLimiter(settings.redis_url),
            cells=cells,
        )

    def routes_changed(self) -> None:
        for listener in self.route_listeners:
            try:
                listener()
            except Exception:  # a router hiccup must not fail the API call that caused it
                log.exception("route listener failed")

    def app_url(self, host_label: str) -> str:
        """The URL an app is served at through the router, e.g. http://blog.localhost:8080."""
        port = self.settings.router_port
        suffix = "" if port == 80 else f":{port}"
        return f"http://{host_label}.{self.settings.apps_domain}{suffix}"

    def domain_url(self, domain: str) -> str:
        port = self.settings.router_port
        return f"http://{domain}" + ("" if port == 80 else f":{port}")

    def close(self) -> None:
        self.db.dispose()
