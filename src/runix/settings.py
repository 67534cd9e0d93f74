"""Every RUNIX_* setting, validated in one place (pydantic-settings)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="RUNIX_", extra="ignore")

    data_dir: Path = Field(Path(".runix"), description="Where Runix keeps everything it stores.")
    host: str = Field("127.0.0.1", description="Address the API and dashboard listen on.")
    port: int = Field(8000, description="Port of the API and dashboard.")
    router_port: int = Field(8080, description="Port of the built-in router that serves the apps.")
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
    sandbox: bool = Field(True, description="Isolate builds and apps (bubblewrap, own uid, cgroup and network); "
                                            "false runs them as root on the host: trusted code only.")
    sandbox_uid_base: int = Field(200_000, ge=1000, description="First of the uids reserved for sandboxes.")
    sandbox_subnet: str = Field("10.89.0.0/16", description="IPv4 range of the sandboxes' own networks.")
    max_parallel_builds: int = Field(2, ge=1, description="Builds running at once on this server (per plan: fewer).")

    # Sign-in with GitHub (dashboard) and the CLI's browser login
    github_client_id: str | None = None
    github_client_secret: str | None = None
    github_base_url: str = "https://github.com"
    github_api_url: str = "https://api.github.com"
    device_poll_interval: int = Field(5, ge=1, le=60, description="Seconds `runix login --web` waits between polls.")

    admin_emails: str = Field("", description="Comma-separated emails of the operator's admin accounts (they "
                                               "may read /metrics).")

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
