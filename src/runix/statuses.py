"""The deployment state machine: its statuses, which moves between them are allowed, and the one way to make one.

    QUEUED -> BUILDING -> DEPLOYING -> READY
       \\          \\            \\
        +----------+------------+--> ERROR or CANCELED (settled, never left)

A build that a stopping server interrupts goes back from BUILDING or DEPLOYING to QUEUED, and builds again on the
next start. The API, the dashboard and the worker all move deployments through `transition` only.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from runix.db.models import Deployment

QUEUED, BUILDING, DEPLOYING, READY, ERROR, CANCELED = "QUEUED", "BUILDING", "DEPLOYING", "READY", "ERROR", "CANCELED"
STATUSES = (QUEUED, BUILDING, DEPLOYING, READY, ERROR, CANCELED)
IN_PROGRESS = (BUILDING, DEPLOYING)  # a worker is on it
ACTIVE = (QUEUED, BUILDING, DEPLOYING)  # not settled yet
SETTLED = frozenset({READY, ERROR, CANCELED})
CANCELABLE = (QUEUED, BUILDING)
WITH_RELEASE = (DEPLOYING, READY)  # a built release is on disk (the others have none, or none yet)

ALLOWED: dict[str, frozenset[str]] = {
    QUEUED: frozenset({BUILDING, ERROR, CANCELED}),
    BUILDING: frozenset({DEPLOYING, ERROR, CANCELED, QUEUED}),
    DEPLOYING: frozenset({READY, ERROR, CANCELED, QUEUED}),
    READY: frozenset(),
    ERROR: frozenset(),
    CANCELED: frozenset(),
}


class TransitionNotAllowed(ValueError):
    """A move the state machine does not have: a bug in the caller, never the user's doing."""


def transition(s: Session, deployment_id: str, from_statuses: tuple[str, ...], to_status: str,
               **fields: Any) -> bool:
    """Moves a deployment to `to_status` only if it is still in one of `from_statuses` (a compare-and-set, so a
    cancel and a finishing build cannot both win), and commits. Returns whether it moved."""
    for status in from_statuses:
        if to_status not in ALLOWED[status]:
            raise TransitionNotAllowed(f"a deployment cannot go from {status} to {to_status}")
    result = s.execute(update(Deployment)
                       .where(Deployment.id == deployment_id, Deployment.status.in_(from_statuses))
                       .values(status=to_status, **fields))
    s.commit()
    return bool(result.rowcount)
