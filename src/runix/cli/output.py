"""What the CLI prints: data on stdout (tables for people, JSON with --json), messages on stderr.

Colour only at a terminal and never with NO_COLOR. Rich is imported only when something is drawn with it, so a
command run by a script (no terminal) starts faster.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from rich.console import Console

STATUS_STYLES = {"READY": "green", "ERROR": "red", "CANCELED": "dim", "QUEUED": "yellow", "BUILDING": "yellow",
                 "DEPLOYING": "cyan"}


class CliError(Exception):
    """A failure the user can act on; printed as one line on stderr, exit status 1 (or `exit_code`)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code


def guarded(run: Callable[[], Any]) -> Any:
    """Runs a command; a failure the person can act on becomes one line on stderr and exit status 1 (or the
    CliError's), instead of a traceback."""
    try:
        return run()
    except CliError as exc:
        error(exc.message)
        sys.exit(exc.exit_code)
    except Exception as exc:
        client = sys.modules.get("runix.client")
        if client is None or not isinstance(exc, client.RunixAPIError):
            raise
        from runix.cli.common import explain

        error(explain(exc))
        sys.exit(1)


def is_tty(stream: Any) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


def colour(stream: Any) -> bool:
    return is_tty(stream) and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"


@cache
def console(stderr: bool = False) -> Console:
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Not a terminal: no colour, and wide enough that tables never wrap a URL for the script reading them.
    return Console(stderr=stderr, highlight=False, no_color=not colour(stream),
                   width=None if is_tty(stream) else 1000, soft_wrap=not is_tty(stream))


# Messages and log lines are painted with plain SGR codes: loading Rich for them would cost a deploy at a terminal
# ~60 ms of start-up. Rich draws the tables of the other commands.
_SGR = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}
# What Rich strips from text it prints (bell, backspace, vertical tab, form feed, carriage return).
_CONTROL = str.maketrans("", "", "\a\b\v\f\r")


def paint(text: str, style: str | None) -> str:
    """`text` in `style` ("bold red", "dim", ...) for a terminal; control characters that move the cursor removed."""
    text = text.translate(_CONTROL)
    codes = ";".join(_SGR[name] for name in (style or "").split() if name in _SGR)
    return f"\x1b[{codes}m{text}\x1b[0m" if codes and text else text


def _write(stream: Any, line: str) -> None:
    stream.write(line + "\n")
    stream.flush()


def message(text: str, style: str | None = None, prefix: str = "") -> None:
    """A line for the person on stderr (stdout stays clean for data)."""
    if style and colour(sys.stderr):
        _write(sys.stderr, paint(prefix, f"bold {style}") + paint(text, None if prefix else style))
    else:
        _write(sys.stderr, f"{prefix}{text}")


def info(text: str) -> None:
    message(text, "dim")


def success(text: str) -> None:
    message(text, "green", "✓ " if colour(sys.stderr) else "")


def warn(text: str) -> None:
    message(text, "yellow", "Warning: ")


def error(text: str) -> None:
    message(text, "red", "Error: ")


def out(text: str) -> None:
    """A line of data on stdout."""
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def emit_json(data: Any) -> None:
    out(json.dumps(data, indent=2, default=str))


def result(data: Any, as_json: bool, text: str) -> None:
    """What a command changed: `data` as JSON for scripts, else `text` as a success message."""
    if as_json:
        emit_json(data)
    else:
        success(text)


def table(columns: Sequence[str], rows: Sequence[Sequence[Any]], empty: str = "Nothing to show.") -> None:
    if not rows:
        info(empty)
        return
    from rich import box
    from rich.table import Table

    grid = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, header_style="bold")
    for name in columns:
        # Ids are copied from here into other commands: never wrapped. The rest folds in a narrow terminal.
        grid.add_column(name, no_wrap=name == "ID", overflow="fold")
    for row in rows:
        grid.add_row(*(cell if hasattr(cell, "__rich_console__") else "" if cell is None else str(cell)
                       for cell in row))
    console().print(grid)


def fields(pairs: Sequence[tuple[str, Any]]) -> None:
    """`name  value` lines for one object (inspect commands)."""
    width = max(len(k) for k, _ in pairs)
    for key, value in pairs:
        if hasattr(value, "__rich__"):
            from rich.text import Text

            console().print(Text(f"{key:<{width}}  ").append_text(value.__rich__()))
        else:
            out(f"{key:<{width}}  {'' if value is None else value}")


def status(value: str | None) -> Any:
    """A deployment status, coloured at a terminal."""
    value = value or ""
    if not colour(sys.stdout):
        return value
    from rich.text import Text

    return Text(value, style=STATUS_STYLES.get(value, ""))


def ago(timestamp: str | float | None) -> str:
    """`3m ago` for an ISO 8601 timestamp or epoch seconds."""
    if timestamp is None:
        return ""
    try:
        when = _parse_time(timestamp)
    except ValueError:
        return str(timestamp)
    seconds = max(0, int((datetime.now(UTC) - when).total_seconds()))
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m")):
        if seconds >= size:
            return f"{seconds // size}{unit} ago"
    return f"{seconds}s ago"


def _parse_time(timestamp: str | float) -> datetime:
    when = (datetime.fromtimestamp(timestamp, UTC) if isinstance(timestamp, int | float)
            else datetime.fromisoformat(str(timestamp).replace("Z", "+00:00")))
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _clock(timestamp: str | float) -> str:
    """HH:MM:SS in local time."""
    try:
        return _parse_time(timestamp).astimezone().strftime("%H:%M:%S")
    except ValueError:
        return ""


def size(n: int) -> str:
    value = float(n)
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"


@contextmanager
def upload_progress(label: str, total: int) -> Iterator[Callable[[int], None]]:
    """Yields `advance(n)` (n more bytes done, of `total`), which may be called from another thread. At a terminal,
    an upload that takes more than a moment shows `label  sent / total` on stderr, redrawn ten times a second and
    erased at the end; nothing is drawn otherwise."""
    if not is_tty(sys.stderr):
        yield lambda n: None
        return
    import threading
    import time

    lock = threading.Lock()
    started = time.monotonic()
    state = {"done": 0, "drawn_at": started}

    def advance(n: int) -> None:
        with lock:
            state["done"] += n
            now = time.monotonic()
            if now - state["drawn_at"] >= 0.1:
                state["drawn_at"] = now
                sys.stderr.write(f"\r\x1b[2K{label}  {size(state['done'])} / {size(total)}")
                sys.stderr.flush()

    try:
        yield advance
    finally:
        with lock:
            if state["drawn_at"] != started:
                sys.stderr.write("\r\x1b[2K")
                sys.stderr.flush()
            state["drawn_at"] = float("inf")  # a late advance() from the packer draws nothing more


def log_line(event: dict[str, Any], stream: Any = None) -> None:
    """One deployment event (a build or runtime log line)."""
    stream = stream or sys.stdout
    text = str(event.get("text", "")).rstrip("\n")
    if colour(stream):
        when = event.get("created_at")
        style = "red" if event.get("stream") == "stderr" else ("cyan" if event.get("type") == "system" else None)
        _write(stream, paint(f"{_clock(when) if when else ''} ", "dim") + paint(text, style))
    else:
        _write(stream, text)
