"""The runtime: where releases run. One interface, one implementation per backend (`local` = bubblewrap processes).

The deployer asks a runtime to `start` a release (it returns once the app answers HTTP), to `stop` it, and for its
`status`. The runtime keeps apps alive on its own: a crashed app is restarted with exponential backoff, and the
deployer hears about it through `on_port` (the app answers at a new address, or at none while it is down) and its output
through `on_log`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Protocol

from runix.pipeline.cells import CellLimits


@dataclass(frozen=True)
class AppSpec:
    """What to run: a release folder, the command that serves it, and its environment (PORT is added)."""

    deployment_id: str
    release_dir: Path
    app_dir: Path
    start_command: str
    env: dict[str, str] = field(default_factory=dict)
    limits: CellLimits | None = None  # the plan's; None: the runtime's default


class AppState(StrEnum):
    STOPPED = "stopped"  # never started, asleep, or stopped on purpose
    STARTING = "starting"  # waiting for its first HTTP answer
    RUNNING = "running"
    RESTARTING = "restarting"  # crashed; waiting out the backoff before starting again


class AppFailed(Exception):
    """The app did not come up: it exited, or did not answer HTTP within the health timeout."""

    def __init__(self, message: str, last_lines: list[str]):
        super().__init__(message)
        self.message = message
        self.last_lines = last_lines

    def describe(self) -> str:
        tail = "\n".join(self.last_lines[-20:])
        return f"{self.message}. Last log lines:\n{tail}" if tail else f"{self.message} (the app printed nothing)"


# (deployment id, stream "stdout"/"stderr"/"system", line)
LogSink = Callable[[str, str, str], None]
# Where an app answers: (host, port)
Address = tuple[str, int]
# (deployment id, its address, or None while the app is down)
AddressSink = Callable[[str, Address | None], None]


class Runtime(Protocol):
    async def start(self, spec: AppSpec) -> Address:
        """Runs the app (or joins a start already under way) and returns its address once it answers HTTP.
        Raises AppFailed when it does not come up; nothing of it is left running then."""

    async def stop(self, deployment_id: str) -> None:
        """Stops the app (SIGTERM to its process group, SIGKILL after a grace period). No-op when not running."""

    async def remove(self, deployment_id: str) -> None:
        """Stops the app and deletes what the runtime kept for it (the deployment is being deleted)."""

    def status(self, deployment_id: str) -> AppState: ...

    def address(self, deployment_id: str) -> Address | None:
        """Where the app answers now, when it is running."""

    def running(self) -> list[str]:
        """Deployment ids of apps that are not stopped."""

    async def stop_all(self) -> None: ...


def make_runtime(kind: str, **kwargs) -> Runtime:  # noqa: ANN003 - each backend takes its own settings
    if kind == "local":
        from runix.pipeline.runtime.local import LocalRuntime

        return LocalRuntime(**kwargs)
    raise ValueError(f"Unknown runtime '{kind}' (RUNIX_RUNTIME): this build supports 'local'")
