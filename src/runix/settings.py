"""Every RUNIX_* setting, validated in one place (pydantic-settings)."""

from __future__ import annotations

import ipaddress
from functools import lru_cache
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNIX_", extra="ignore")

    data_dir: Path = Field(Path(".runix"), description="Where Runix keeps everything it stores.")
    host: str = Field("127.0.0.1", description="Address the API and dashboard listen on.")
    port: int = Field(8000, description="Port of the API and dashboard.")
    router_port: int = Field(8080, description="Port of the built-in router that serves the apps.")
    trusted_proxies: str = Field("", description="Comma-separated addresses or networks of proxies in front of the "
                                                 "router whose X-Forwarded-For/Proto/Host it keeps (none by default).")
    public_url: str | None = Field(None, description="URL users reach the API at (default: http://host:port).")

    database_url: str | None = Field(None, description="SQLAlchemy URL; default: SQLite in the data dir.")
    redis_url: str | None = Field(None, description="Redis for rate limits and events shared by several processes.")
    smtp_url: str | None = Field(None, description="smtp://user:pass@host:port; default: Maildir in the data dir.")
    mail_from: str = Field("Runix <no-reply@runix.localhost>", description="Sender of sign-in mail.")
    secret_key: str | None = Field(None, description="Fernet key for env values; default: a key file in the data dir.")
    dns_resolver: str | None = Field(None, description="host[:port] of the DNS server used to verify domains.")
    domain_claim_ttl_hours: float = Field(72.0, gt=0, description="Hours an unverified custom domain is kept: "
                                                                  "unverified by then, the claim is deleted.")

    rate_limit_per_minute: int | None = Field(None, description="Overrides every plan's requests/minute.")
    disk_quota_mb: int | None = Field(None, ge=1, description="Sources and releases per account, in MB, for every "
                                                          "plan (default: the plan's).")
    build_cache_quota_mb: int | None = Field(None, ge=1, description="Build caches per account, in MB, for every "
                                                                 "plan (default: the plan's).")
    max_body_bytes: int = Field(1_048_576, description="Largest JSON request body accepted.")

    # Deploy pipeline
    apps_domain: str = Field("localhost", description="Apps are served at <project>.<apps domain>.")
    runtime: str = Field("local", description="Where apps run: local (bubblewrap) or docker.")
    router: str = Field("embedded", description="Who serves app traffic: embedded or caddy.")
    router_https_port: int | None = Field(None, description="With the caddy router: also serve HTTPS on this port.")
    max_upload_bytes: int = Field(100 * 1024 * 1024, description="Largest compressed source archive.")
    max_unpacked_bytes: int = Field(1024 * 1024 * 1024, description="Largest unpacked source archive.")
    max_source_files: int = Field(20_000, description="Most files in a source archive.")
    build_timeout: float = Field(600.0, description="Seconds a build may take.")
    health_timeout: float = Field(60.0, description="Seconds an app has to answer HTTP after it starts.")
    idle_timeout: float = Field(900.0, description="Seconds without traffic before a non-production app sleeps.")
    rollback_warm_seconds: float = Field(
        3600.0, ge=0, description="Seconds the previous production deployment keeps running after a promote, as the "
                                  "instant-rollback target; then it sleeps when idle like any other (older ones sleep "
                                  "at once). Asleep, a rollback still works: it waits for the app to start.")
    sandbox: bool = Field(True, description="Isolate builds and apps (bubblewrap, own uid, cgroup and network); "
                                            "false runs them as root on the host: trusted code only.")
    sandbox_uid_base: int = Field(200_000, ge=1000, description="First of the uids reserved for sandboxes.")
    sandbox_subnet: str = Field("10.89.0.0/16", description="IPv4 range of the sandboxes' own networks.")
    max_parallel_builds: int = Field(2, ge=1, description="Builds running at once on this server (per plan: fewer).")

    # What a tenant's output may take of the database and the server's memory (docs/security.md)
    build_log_max_lines: int = Field(10_000, ge=1, description="Lines of a deployment's build log that are kept; "
                                                               "past them one note, and the build goes on.")
    build_log_max_bytes: int = Field(5_000_000, ge=1, description="Bytes of a deployment's build log that are kept.")
    runtime_log_lines: int = Field(5000, ge=1, description="Runtime lines kept per deployment: older ones are "
                                                           "deleted as new ones come.")
    event_queue_lines: int = Field(20_000, ge=1, description="Log lines waiting to be stored, of all deployments; "
                                                             "past them lines are dropped (and counted).")
    event_queue_bytes: int = Field(16 * 1024 * 1024, ge=1, description="Characters of the lines waiting to be "
                                                                        "stored.")

    # Sign-in with GitHub (dashboard) and the CLI's browser login
    github_client_id: str | None = None
    github_client_secret: str | None = None
    github_base_url: str = "https://github.com"
    github_api_url: str = "https://api.github.com"
    device_poll_interval: int = Field(5, ge=1, le=60, description="Seconds `runix login --web` waits between polls.")

    admin_emails: str = Field("", description="Comma-separated emails of the operator's admin accounts (they "
                                               "may read /metrics and set any account's plan).")

    # Paid plans through a payment provider that speaks Stripe's API (checkout sessions, signed webhooks)
    payments_api_url: str = Field("https://api.stripe.com", description="The provider's API.")
    payments_secret_key: str | None = Field(None, description="The provider's secret API key; unset: only admins "
                                                              "change plans upwards.")
    payments_webhook_secret: str | None = Field(None, description="Signs the provider's webhooks to "
                                                                  "POST /billing/webhook.")
    payments_currency: str = "usd"

    @field_validator("trusted_proxies")
    @classmethod
    def _proxies_are_addresses(cls, value: str) -> str:
        for item in filter(None, (v.strip() for v in value.split(","))):
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                raise ValueError(f"{item!r} is not an IP address or network (e.g. 10.0.0.5 or 10.0.0.0/8)") from None
        return value

    def is_admin(self, email: str) -> bool:
        return email.strip().lower() in {e.strip().lower() for e in self.admin_emails.split(",") if e.strip()}

    log_level: str = Field("info", description="debug, info, warning or error.")

    @property
    def api_url(self) -> str:
        return self.public_url or f"http://{self.host}:{self.port}"

    @property
    def sqlalchemy_url(self) -> str:
        if self.database_url:
            url = self.database_url
            # Accept plain postgres URLs and use psycopg 3 for them.
            for prefix in ("postgresql://", "postgres://"):
                if url.startswith(prefix):
                    return "postgresql+psycopg://" + url[len(prefix) :]
            return url
        return f"sqlite:///{(self.data_dir / 'runix.db').resolve()}"


@lru_cache
def get_settings() -> Settings:
    return Settings()
