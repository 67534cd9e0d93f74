"""The small HTML pages the router answers with itself when it cannot hand a request to an app."""

from __future__ import annotations

from html import escape

_REASONS = {400: "Bad Request", 404: "Not Found", 502: "Bad Gateway", 503: "Service Unavailable"}

_TEMPLATE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{status} {title} · Runix</title>
<style>
body{{margin:0;min-height:100vh;display:grid;place-items:center;background:#0b0d12;color:#e6e8ee;
font:16px/1.5 system-ui,-apple-system,Segoe UI,Roboto,sans-serif}}
main{{max-width:34rem;padding:2rem}} .code{{color:#7c8599;font-size:.9rem;letter-spacing:.08em}}
h1{{margin:.2rem 0 .6rem;font-size:1.6rem}} code{{background:#1a1f2b;padding:.1rem .35rem;border-radius:4px}}
footer{{margin-top:1.5rem;color:#7c8599;font-size:.85rem}}
</style></head>
<body><main><div class="code">{status} · {reason}</div><h1>{title}</h1><p>{message}</p>
<footer>Served by the Runix router</footer></main></body></html>
"""


def error_response(status: int, title: str, message: str, *, keep_alive: bool) -> bytes:
    """A whole HTTP/1.1 response; `message` is HTML and must already be escaped."""
    body = _TEMPLATE.format(status=status, reason=_REASONS[status], title=escape(title), message=message).encode()
    head = (
        f"HTTP/1.1 {status} {_REASONS[status]}\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Cache-Control: no-store\r\n"
        f"Connection: {'keep-alive' if keep_alive else 'close'}\r\n\r\n"
    )
    return head.encode("latin-1") + body


def not_found(host: str, *, keep_alive: bool) -> bytes:
    return error_response(
        404,
        "No app at this address",
        f"Runix has no deployment for <code>{escape(host)}</code>. Check the URL, or deploy a project to it.",
        keep_alive=keep_alive,
    )


def app_down(host: str, *, keep_alive: bool) -> bytes:
    return error_response(
        502,
        "This app is not answering",
        f"The deployment behind <code>{escape(host)}</code> is not running or did not answer. "
        "Its logs in Runix say why.",
        keep_alive=keep_alive,
    )


def wake_timed_out(host: str, *, keep_alive: bool) -> bytes:
    return error_response(
        503,
        "This app took too long to start",
        f"The deployment behind <code>{escape(host)}</code> was asleep and did not start in time. Try again shortly.",
        keep_alive=keep_alive,
    )


def bad_request(*, keep_alive: bool = False) -> bytes:
    return error_response(400, "Bad request", "The router could not read this HTTP request.", keep_alive=keep_alive)
