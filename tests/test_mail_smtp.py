"""Sign-in mail through a real SMTP server on loopback (aiosmtpd), with authentication, when RUNIX_SMTP_URL is set."""

from __future__ import annotations

import re
import time
from email import message_from_bytes
from email.message import Message
from pathlib import Path

import httpx
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from tests.support import free_port, running_server


class Inbox:
    """An SMTP handler that keeps every message it is given, and only lets runix/secret log in."""

    def __init__(self) -> None:
        self.messages: list[Message] = []
        self.logins: list[str] = []

    async def handle_DATA(self, server, session, envelope) -> str:  # noqa: N802 (aiosmtpd's hook name)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"

    def authenticate(self, server, session, envelope, mechanism, auth_data) -> AuthResult:
        if isinstance(auth_data, LoginPassword) and (auth_data.login, auth_data.password) == (b"runix", b"s3cret"):
            self.logins.append(auth_data.login.decode())
            return AuthResult(success=True)
        return AuthResult(success=False, handled=False)

    def wait_for(self, to: str, timeout: float = 10.0) -> Message:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for msg in self.messages:
                if msg["To"] == to:
                    return msg
            time.sleep(0.05)
        raise AssertionError(f"no mail to {to} reached the SMTP server")


@pytest.fixture
def smtp_inbox():
    inbox = Inbox()
    port = free_port()
    controller = Controller(inbox, hostname="127.0.0.1", port=port, authenticator=inbox.authenticate,
                            auth_require_tls=False)
    controller.start()
    try:
        yield inbox, port
    finally:
        controller.stop()


def test_sign_in_code_is_sent_over_smtp(tmp_path: Path, smtp_inbox) -> None:
    inbox, port = smtp_inbox
    with running_server(tmp_path, RUNIX_SMTP_URL=f"smtp://runix:s3cret@127.0.0.1:{port}") as server:
        email = "smtp-user@example.com"
        assert httpx.post(f"{server.url}/auth/email", json={"email": email}).status_code == 200
        msg = inbox.wait_for(email)
        assert inbox.logins == ["runix"]
        assert "sign-in code" in msg["Subject"]
        code = re.search(r"\b(\d{6})\b", msg.get_payload(decode=True).decode()).group(1)

        r = httpx.post(f"{server.url}/auth/email/verify", json={"email": email, "code": code})
        assert r.status_code == 200, r.text
        assert r.json()["token"].startswith("rnx_s_")
        # With SMTP configured, nothing goes to the Maildir and the code stays out of the server log.
        assert not (server.maildir / "new").exists() or not any((server.maildir / "new").iterdir())
        assert code not in server.log()
