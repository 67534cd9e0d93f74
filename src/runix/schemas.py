"""Request and response bodies of the REST API: `XCreate` / `XUpdate` in, `XPublic` out."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any, Literal

from email_validator import EmailNotValidError, validate_email
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, WithJsonSchema, field_validator
from pydantic.json_schema import SkipJsonSchema

from runix.errors import ValidationFailed
from runix.names import RESERVED_PROJECT_NAMES, domain_name

EnvTarget = Literal["production", "preview", "development"]
DeployTarget = Literal["production", "preview"]
DeploymentStatus = Literal["QUEUED", "BUILDING", "DEPLOYING", "READY", "ERROR", "CANCELED"]


def _any_case(word: str) -> str:
    return "".join(f"[{c.upper()}{c.lower()}]" if c.isalpha() else c for c in word)


def any_case_choice(values: Iterable[str]) -> str:
    """A pattern for one of `values` in any letter case, or nothing (query filters that the services normalise)."""
    return "^(" + "|".join(_any_case(v) for v in values) + ")?$"


# What `runix.names` and the env service accept, written as JSON Schema for the OpenAPI document, so that clients
# (and schemathesis) know which values are valid before sending them. The services stay the judges.
PROJECT_NAME_SCHEMA: dict[str, Any] = {
    "pattern": r"^[A-Za-z0-9]+(-[A-Za-z0-9]+)*$", "maxLength": 48,
    "not": {"type": "string", "pattern": "^(" + "|".join(_any_case(n) for n in sorted(RESERVED_PROJECT_NAMES)) + ")$"},
}
DOMAIN_NAME_SCHEMA: dict[str, Any] = {
    "pattern": r"^([A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$",
}
ENV_KEY_SCHEMA: dict[str, Any] = {
    "pattern": r"^[A-Za-z_][A-Za-z0-9_]*$",
    "not": {"anyOf": [{"const": "PORT"}, {"type": "string", "pattern": "^" + _any_case("runix_")}]},
}


def _email_address(value: str) -> str:
    """A valid address, on any host name Runix accepts as a domain: reserved names such as corp.local or
    example.test included, since a self-hosted team may well mail itself there."""
    local, _, host = value.strip().rpartition("@")
    try:
        host = domain_name(host)
        checked = validate_email(f"{local}@example.com", check_deliverability=False)
    except (EmailNotValidError, ValidationFailed) as exc:
        raise ValueError("value is not a valid email address") from exc
    return f"{checked.local_part}@{host}"


EmailAddress = Annotated[str, AfterValidator(_email_address), WithJsonSchema({"type": "string", "format": "email"})]


class Strict(BaseModel):
    """A request body: unknown fields are an error, and no string may hold a NUL (databases cannot store one)."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _no_nul(cls, value: Any) -> Any:
        for item in value if isinstance(value, list) else (value,):
            if isinstance(item, str) and "\x00" in item:
                raise ValueError("must not contain NUL characters")
        return value


class ErrorBody(BaseModel):
    error: str = Field(description="What went wrong, in words a person can act on.")
    code: str = Field(description="UPPER_SNAKE error code, e.g. NOT_FOUND.")
    details: Any | None = None


# Auth and account
class EmailSignIn(Strict):
    email: EmailAddress


class EmailSent(BaseModel):
    sent: bool


class EmailVerify(Strict):
    email: EmailAddress
    code: str = Field(min_length=1, max_length=32)


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    email: str
    name: str | None
    plan: str
    created_at: datetime


class SessionPublic(BaseModel):
    token: str
    expires_at: datetime | None
    user: UserPublic


class CliTokenCreate(Strict):
    name: str | None = Field(None, min_length=1, max_length=100)


class TokenPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)
    id: str
    name: str
    kind: str
    created_at: datetime
    expires_at: datetime | None


class TokenCreated(TokenPublic):
    token: str = Field(description="The token itself. It is shown only this once.")


class LoggedOut(BaseModel):
    revoked: bool


# Projects
class ProjectSettings(Strict):
    framework: str | None = Field(None, max_length=30)
    install_command: str | None = Field(None, max_length=2000)
    build_command: str | None = Field(None, max_length=2000)
    start_command: str | None = Field(None, max_length=2000)
    root_directory: str | None = Field(None, max_length=255)


class ProjectCreate(ProjectSettings):
    name: str = Field(min_length=1, max_length=100, json_schema_extra=PROJECT_NAME_SCHEMA)


class ProjectUpdate(ProjectSettings):
    name: str | None = Field(None, min_length=1, max_length=100, json_schema_extra=PROJECT_NAME_SCHEMA)


class ProjectPublic(BaseModel):
    id: str
    name: str
    framework: str | None
    install_command: str | None
    build_command: str | None
    start_command: str | None
    root_directory: str | None
    production_deployment_id: str | None
    urls: list[str]
    created_at: datetime
    updated_at: datetime


# Environment variables
class EnvVarCreate(Strict):
    key: str = Field(min_length=1, max_length=256, json_schema_extra=ENV_KEY_SCHEMA)
    value: str = Field(max_length=65536)
    targets: list[EnvTarget] = Field(default_factory=lambda: ["production", "preview", "development"], min_length=1)
    type: Literal["plain", "sensitive"] = "plain"


class EnvVarUpdate(Strict):
    key: str | None = Field(None, min_length=1, max_length=256, json_schema_extra=ENV_KEY_SCHEMA)
    value: str | None = Field(None, max_length=65536)
    targets: list[EnvTarget] | None = Field(None, min_length=1)
    type: Literal["plain", "sensitive"] | None = None


class EnvVarPublic(BaseModel):
    id: str
    key: str
    # A sensitive variable's value is left out of the JSON altogether (not null), and the schema says so: a string
    # that is not required.
    value: str | SkipJsonSchema[None] = Field(
        None, exclude_if=lambda value: value is None, json_schema_extra=lambda schema: schema.pop("default", None),
        description="The value of a plain variable. Absent for a sensitive one: it is write-only.")
    targets: list[EnvTarget]
    type: Literal["plain", "sensitive"]
    created_at: datetime
    updated_at: datetime


# Domains
class DomainCreate(Strict):
    name: str = Field(min_length=1, max_length=253, json_schema_extra=DOMAIN_NAME_SCHEMA)


class DomainVerification(BaseModel):
    type: Literal["TXT"]
    name: str
    value: str


class DomainPublic(BaseModel):
    id: str
    name: str
    project_id: str
    verified: bool
    verification: DomainVerification
    created_at: datetime
    verified_at: datetime | None
    expires_at: datetime | None = Field(description="When this claim lapses unless verified first; null once "
                                                    "verified")


# Billing
class PlanChange(Strict):
    plan: Literal["hobby", "pro", "enterprise"]


class CheckoutCreate(Strict):
    plan: Literal["hobby", "pro", "enterprise"]


class CheckoutPublic(BaseModel):
    id: str
    url: str  # the provider's hosted payment page: open it in a browser
    plan: str


class BillingPublic(BaseModel):
    plan: str
    limits: dict[str, int | None]
    usage: dict[str, int]
    plans: list[dict[str, Any]]


# Deployments
class DeploymentPublic(BaseModel):
    id: str
    project_id: str
    project: str = Field(description="The project's name.")
    url: str = Field(description="This deployment's own URL; it never changes.")
    status: DeploymentStatus
    target: DeployTarget
    error: str | None = Field(description="Why the deployment failed, when status is ERROR or CANCELED.")
    created_at: datetime
    build_started_at: datetime | None
    build_finished_at: datetime | None
    ready_at: datetime | None
    finished_at: datetime | None
    source_bytes: int | None
    build_kind: str | None = Field(description="static, python, node or procfile, once the build found out.")
    is_production: bool = Field(description="True for the deployment the project's production URLs serve.")


class DeploymentEventPublic(BaseModel):
    id: int
    created_at: str = Field(description="ISO 8601 UTC with microseconds.")
    type: Literal["build", "runtime", "system"]
    stream: str = Field(description="stdout or stderr (system lines: stdout).")
    text: str
