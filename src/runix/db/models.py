"""The SQLAlchemy models: every table Runix keeps. Schema changes go through Alembic (db/migrations)."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Timestamps are stored and returned as UTC-aware datetimes on every database (SQLite drops tzinfo)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect):  # type: ignore[override]
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect):  # type: ignore[override]
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


class Base(DeclarativeBase):
    pass


class Account(Base):
    __tablename__ = "accounts"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)
    name: Mapped[str | None] = mapped_column(String(200))
    plan: Mapped[str] = mapped_column(String(20), default="hobby")
    github_id: Mapped[int | None] = mapped_column(BigInteger, unique=True)
    github_login: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class Token(Base):
    """An API token. Only its SHA-256 hash is kept; the value is shown once when it is made."""

    __tablename__ = "tokens"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # "session" or "cli"
    name: Mapped[str] = mapped_column(String(100))
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class LoginCode(Base):
    """A one-time sign-in code mailed to an address, kept only as an HMAC."""

    __tablename__ = "login_codes"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    email: Mapped[str] = mapped_column(String(320), index=True)
    code_hash: Mapped[str] = mapped_column(String(64))
    link_hash: Mapped[str | None] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    consumed_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class DeviceAuthorization(Base):
    """An OAuth 2.0 device authorization (RFC 8628) started by `runix login --web`."""

    __tablename__ = "device_authorizations"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    device_code_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_code: Mapped[str] = mapped_column(String(16), unique=True)
    account_id: Mapped[str | None] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(10), default="pending")  # pending/approved/denied/used
    client_name: Mapped[str] = mapped_column(String(100), default="runix CLI")
    interval: Mapped[int] = mapped_column(Integer, default=5)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


class Project(Base):
    __tablename__ = "projects"
    # (account_id, id): a page of an account's projects, newest first, is a range scan however many there are.
    __table_args__ = (UniqueConstraint("account_id", "name"), Index("ix_projects_account_id_id", "account_id", "id"))

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(48))
    # Globally unique host label: the name when free, else name plus a suffix. Apps are served at <slug>.<domain>.
    slug: Mapped[str] = mapped_column(String(63), unique=True)
    framework: Mapped[str | None] = mapped_column(String(30))
    install_command: Mapped[str | None] = mapped_column(Text)
    build_command: Mapped[str | None] = mapped_column(Text)
    start_command: Mapped[str | None] = mapped_column(Text)
    root_directory: Mapped[str | None] = mapped_column(String(255))
    production_deployment_id: Mapped[str | None] = mapped_column(String(40))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class EnvVar(Base):
    __tablename__ = "env_vars"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    key: Mapped[str] = mapped_column(String(256))
    value_encrypted: Mapped[str] = mapped_column(Text)  # Fernet token
    type: Mapped[str] = mapped_column(String(10), default="plain")  # plain or sensitive
    targets: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)


class Domain(Base):
    """A project's claim on a custom domain. Claims on one name may be many (an unverified claim blocks nobody);
    at most one of them is verified, and only that one is served (ux_domains_verified_name, below)."""

    __tablename__ = "domains"
    __table_args__ = (UniqueConstraint("project_id", "name", name="uq_domains_project_id_name"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(253))
    verified: Mapped[bool] = mapped_column(Boolean, default=False)
    verification_token: Mapped[str] = mapped_column(String(64))  # random per claim: one claim's TXT proves no other
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    verified_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When an unverified claim lapses (RUNIX_DOMAIN_CLAIM_TTL_HOURS after it was made or lost its verification);
    # None while verified.
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, index=True)


# The first verification of a name wins: a second verified row for it fails to commit, however the two race.
Index("ux_domains_verified_name", Domain.name, unique=True,
      sqlite_where=Domain.verified.is_(True), postgresql_where=Domain.verified.is_(True))


class Deployment(Base):
    """One build of one upload. Its release (folder + start command + env snapshot) is what runs."""

    __tablename__ = "deployments"
    __table_args__ = (Index("ix_deployments_project_id_id", "project_id", "id"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    project_id: Mapped[str] = mapped_column(ForeignKey("projects.id", ondelete="CASCADE"))
    account_id: Mapped[str] = mapped_column(ForeignKey("accounts.id", ondelete="CASCADE"), index=True)
    target: Mapped[str] = mapped_column(String(12))  # production or preview
    status: Mapped[str] = mapped_column(String(12), default="QUEUED", index=True)
    error: Mapped[str | None] = mapped_column(Text)
    source_sha256: Mapped[str | None] = mapped_column(String(64))
    source_bytes: Mapped[int | None] = mapped_column(BigInteger)
    build_kind: Mapped[str | None] = mapped_column(String(20))  # static, python, node, procfile
    start_command: Mapped[str | None] = mapped_column(Text)
    env_encrypted: Mapped[str | None] = mapped_column(Text)  # Fernet JSON snapshot of the target's env vars
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    build_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    build_finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    ready_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    meta: Mapped[dict | None] = mapped_column(JSON)


class DeploymentEvent(Base):
    """A build or runtime log line of a deployment."""

    __tablename__ = "deployment_events"
    __table_args__ = (Index("ix_deployment_events_deployment_id_id", "deployment_id", "id"),)

    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True)
    deployment_id: Mapped[str] = mapped_column(ForeignKey("deployments.id", ondelete="CASCADE"))
    created_at: Mapped[float] = mapped_column(Float)  # epoch seconds, sub-second precision
    type: Mapped[str] = mapped_column(String(10))  # build, runtime, system
    stream: Mapped[str] = mapped_column(String(10), default="stdout")  # stdout, stderr
    text: Mapped[str] = mapped_column(Text)
