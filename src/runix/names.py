"""The one place that decides what a project or domain name may be."""

from __future__ import annotations

import re

from runix.errors import ValidationFailed
from runix.ids import short_id

_PROJECT = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,46}[a-z0-9])?$")
_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
MAX_LABEL = 63
RESERVED_PROJECT_NAMES = frozenset({"api", "www", "dashboard", "admin", "runix"})


def project_name(raw: str) -> str:
    """A DNS-label-safe project name: lower case letters, digits and inner dashes, 1 to 48 chars."""
    name = raw.strip().lower()
    if not _PROJECT.match(name) or "--" in name:
        raise ValidationFailed(
            "Project name must be 1-48 lower-case letters, digits or single dashes, "
            "starting and ending with a letter or digit",
            details=[{"field": "name", "value": raw}],
        )
    if name in RESERVED_PROJECT_NAMES:
        raise ValidationFailed(f"Project name '{name}' is reserved", details=[{"field": "name", "value": raw}])
    return name


def domain_name(raw: str) -> str:
    """A fully qualified host name such as `www.example.com` (no scheme, port, path or wildcard)."""
    name = raw.strip().lower().rstrip(".")
    labels = name.split(".")
    if len(name) > 253 or len(labels) < 2 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        raise ValidationFailed(
            f"'{raw}' is not a valid domain name (expected something like www.example.com)",
            details=[{"field": "name", "value": raw}],
        )
    return name


def host_label(project_slug: str, deployment_id: str) -> str:
    """A deployment's own host label, `<project>-<short id>`, within the 63 characters of a DNS label."""
    suffix = short_id(deployment_id)
    return f"{project_slug[: MAX_LABEL - len(suffix) - 1]}-{suffix}"
