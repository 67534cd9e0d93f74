"""The Runix Python SDK: a typed method for each REST API endpoint. The `runix` command does everything through it.

    from runix.client import RunixClient
    with RunixClient("http://127.0.0.1:8000", token) as runix:
        for project in runix.list_projects():
            print(project["name"], project["urls"])

Every failure is a `RunixAPIError(status, code, message, retry_after)`; a server that cannot be reached is its
subclass `RunixConnectionError` (status 0). Reads (GET) that meet a 429 wait for `Retry-After` and try again.

HTTP goes through a transport (runix.client.transport): httpx (runix.client.httpx_transport), imported only once
a client is made.
"""

from runix.client.sdk import (
    DEFAULT_API_URL,
    SETTLED,
    Billing,
    CreatedToken,
    Deployment,
    DeploymentEvent,
    DeployTarget,
    DeviceAuthorization,
    Domain,
    DomainVerification,
    EnvTarget,
    EnvVar,
    EventStream,
    Project,
    RunixAPIError,
    RunixClient,
    RunixConnectionError,
    Session,
    Token,
    User,
)
from runix.client.transport import Transport

__all__ = [
    "DEFAULT_API_URL", "SETTLED", "Billing", "CreatedToken", "Deployment", "DeploymentEvent", "DeployTarget",
    "DeviceAuthorization", "Domain", "DomainVerification", "EnvTarget", "EnvVar", "EventStream", "Project",
    "RunixAPIError", "RunixClient", "RunixConnectionError", "Session", "Token", "Transport", "User",
]
