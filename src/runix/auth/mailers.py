"""Mailers: SMTP in production, a Maildir in the data dir by default. One small interface, `send`."""

from __future__ import annotations

import mailbox
import smtplib
from email.message import EmailMessage
from email.utils import formatdate, make_msgid
from pathlib import Path
from typing import Protocol
from urllib.parse import unquote, urlparse

import structlog

log = structlog.get_logger("runix.mail")


class Mailer(Protocol):
    def send(self, to: str, subject: str, text: str) -> None: ...


def _message(sender: str, to: str, subject: str, text: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Date"] = formatdate(localtime=False)
    msg["Message-ID"] = make_msgid(domain="runix.localhost")
    msg.set_content(text)
    return msg


class MaildirMailer:
    """Writes each message as a file in a Maildir (read it with `mailbox.Maildir`)."""

    def __init__(self, path: Path, sender: str):
        self.path = path
        self.sender = sender

    def send(self, to: str, subject: str, text: str) -> None:
        box = mailbox.Maildir(self.path, create=True)
        box.add(_message(self.sender, to, subject, text))
        box.close()


class SmtpMailer:
    """Sends through an SMTP server: `smtp://user:pass@host:port` (STARTTLS when offered) or `smtps://…`."""

    def __init__(self, url: str, sender: str):
        self.url = urlparse(url)
        self.sender = sender

    def send(self, to: str, subject: str, text: str) -> None:
        u = self.url
        if u.scheme == "smtps":
            client: smtplib.SMTP = smtplib.SMTP_SSL(u.hostname or "localhost", u.port or 465, timeout=30)
        else:
            client = smtplib.SMTP(u.hostname or "localhost", u.port or 25, timeout=30)
        with client:
            client.ehlo()
            if u.scheme != "smtps" and client.has_extn("starttls"):
                client.starttls()
                client.ehlo()
            if u.username:
                client.login(unquote(u.username), unquote(u.password or ""))
            client.send_message(_message(self.sender, to, subject, text))


def make_mailer(smtp_url: str | None, maildir: Path, sender: str) -> Mailer:
    return SmtpMailer(smtp_url, sender) if smtp_url else MaildirMailer(maildir, sender)
