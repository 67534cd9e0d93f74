"""What the CLI draws at a terminal without Rich: painted messages and log lines, and the upload progress line."""

from __future__ import annotations

import io
import threading
import time

import pytest

from runix.cli import output


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def terminal(monkeypatch: pytest.MonkeyPatch) -> Terminal:
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    return Terminal()


def on_stderr(monkeypatch: pytest.MonkeyPatch, terminal: Terminal) -> None:
    """In the test itself: pytest sets its own sys.stderr back between a fixture and the test."""
    monkeypatch.setattr("sys.stderr", terminal)


def test_messages_and_log_lines_are_painted_at_a_terminal(terminal: Terminal, monkeypatch: pytest.MonkeyPatch) -> None:
    on_stderr(monkeypatch, terminal)
    output.error("no luck")
    output.log_line({"text": "boom\r\x07\n", "stream": "stderr", "created_at": 0}, terminal)
    output.log_line({"text": "plain", "stream": "stdout"}, terminal)
    lines = terminal.getvalue().splitlines()
    assert lines[0] == "\x1b[1;31mError: \x1b[0mno luck"
    assert lines[1].endswith(" \x1b[0m\x1b[31mboom\x1b[0m") and lines[1].startswith("\x1b[2m")  # no CR, no bell
    assert lines[2] == "\x1b[2m \x1b[0mplain"


def test_no_colour_with_no_color(terminal: Terminal, monkeypatch: pytest.MonkeyPatch) -> None:
    on_stderr(monkeypatch, terminal)
    monkeypatch.setenv("NO_COLOR", "1")
    output.warn("careful")
    assert terminal.getvalue() == "Warning: careful\n"


def test_a_quick_upload_draws_nothing_a_slow_one_a_line_it_erases(terminal: Terminal,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    on_stderr(monkeypatch, terminal)
    with output.upload_progress("Uploading", 2048) as advance:
        advance(2048)
    assert terminal.getvalue() == ""
    with output.upload_progress("Uploading", 4096) as advance:
        time.sleep(0.12)
        thread = threading.Thread(target=advance, args=(1024,))  # the packer reports from its own thread
        thread.start()
        thread.join()
    assert terminal.getvalue() == "\r\x1b[2KUploading  1.0 KB / 4.0 KB\r\x1b[2K"
