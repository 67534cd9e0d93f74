"""The OAuth 2.0 device authorization grant (RFC 8628) behind `runix login --web`, over real HTTP."""

from __future__ import annotations

import sqlite3
import time

import httpx
import pytest

from tests.support import RunixServer

GRANT = "urn:ietf:params:oauth:grant-type:device_code"


def start(server: RunixServer, **body: object) -> dict:
    r = httpx.post(f"{server.url}/auth/device", json={"client_name": "laptop", "interval": 1, **body}, timeout=10)
    assert r.status_code == 200, r.text
    return r.json()


def poll(server: RunixServer, device_code: str, form: bool = False) -> httpx.Response:
    body = {"device_code": device_code, "grant_type": GRANT}
    if form:
        return httpx.post(f"{server.url}/auth/device/token", data=body, timeout=10)
    return httpx.post(f"{server.url}/auth/device/token", json=body, timeout=10)


def test_start_answers_the_rfc_fields(server: RunixServer) -> None:
    started = start(server)
    assert set(started) == {"device_code", "user_code", "verification_uri", "verification_uri_complete",
                            "expires_in", "interval"}
    assert started["verification_uri"] == f"{server.url}/dashboard/device"
    assert started["verification_uri_complete"] == f"{server.url}/dashboard/device?user_code={started['user_code']}"
    assert started["expires_in"] == 600 and started["interval"] == 1
    code = started["user_code"]
    assert len(code) == 9 and code[4] == "-" and code.replace("-", "").isalpha() and code.isupper()
    # Without asking, the server's interval applies (5 seconds by default).
    r = httpx.post(f"{server.url}/auth/device", timeout=10)
    assert r.status_code == 200 and r.json()["interval"] == 5


def test_polling_too_fast_slows_down(server: RunixServer) -> None:
    started = start(server)
    r = poll(server, started["device_code"])
    assert r.status_code == 400
    assert r.json()["error"] == "authorization_pending" and r.json()["code"] == "BAD_REQUEST"
    assert r.json()["error_description"]
    r = poll(server, started["device_code"], form=True)  # at once again: too fast
    assert r.status_code == 400 and r.json()["error"] == "slow_down"
    assert "6 seconds" in r.json()["error_description"]  # RFC 8628: the interval grows by 5 seconds


def test_approved_login_gets_one_cli_token(server: RunixServer) -> None:
    started = start(server)
    assert poll(server, started["device_code"]).json()["error"] == "authorization_pending"
    alice = server.sign_in()
    r = alice.client.post("/auth/device/approve", json={"user_code": started["user_code"].lower().replace("-", " ")})
    assert r.status_code == 200, r.text
    assert r.json() == {"user_code": started["user_code"], "status": "approved", "client_name": "laptop"}
    # Approving twice is a conflict, not a second token.
    r = alice.client.post("/auth/device/approve", json={"user_code": started["user_code"]})
    assert r.status_code == 409 and r.json()["code"] == "CONFLICT"

    time.sleep(1.0)
    r = poll(server, started["device_code"], form=True)
    assert r.status_code == 200, r.text
    token = r.json()
    assert token["access_token"].startswith("rnx_c_") and token["token_type"] == "bearer"
    assert token["id"].startswith("tok_") and "laptop" in token["name"] and token["created_at"]
    assert r.headers["cache-control"] == "no-store"
    me = httpx.get(f"{server.url}/user", headers={"Authorization": f"Bearer {token['access_token']}"}, timeout=10)
    assert me.status_code == 200 and me.json()["email"] == alice.email
    # Usable once: polling again gets nothing more.
    r = poll(server, started["device_code"])
    assert r.status_code == 400 and r.json()["error"] == "invalid_grant"


def test_denied_login_gets_access_denied(server: RunixServer) -> None:
    started = start(server)
    alice = server.sign_in()
    r = alice.client.post("/auth/device/approve", json={"user_code": started["user_code"], "approve": False})
    assert r.status_code == 200 and r.json()["status"] == "denied"
    r = poll(server, started["device_code"])
    assert r.status_code == 400 and r.json()["error"] == "access_denied"


def test_expired_code(server: RunixServer) -> None:
    started = start(server)
    with sqlite3.connect(server.data_dir / "runix.db") as db:
        db.execute("UPDATE device_authorizations SET expires_at = '2000-01-01 00:00:00.000000' WHERE user_code = ?",
                   (started["user_code"],))
    r = poll(server, started["device_code"])
    assert r.status_code == 400 and r.json()["error"] == "expired_token"
    alice = server.sign_in()
    r = alice.client.post("/auth/device/approve", json={"user_code": started["user_code"]})
    assert r.status_code == 404 and r.json()["code"] == "NOT_FOUND"


@pytest.mark.parametrize(("body", "error"), [
    ({"device_code": "nope", "grant_type": GRANT}, "invalid_grant"),
    ({"device_code": "nope", "grant_type": "authorization_code"}, "unsupported_grant_type"),
])
def test_bad_token_requests(server: RunixServer, body: dict, error: str) -> None:
    r = httpx.post(f"{server.url}/auth/device/token", json=body, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == error


def test_malformed_requests_are_clear_400s(server: RunixServer) -> None:
    r = httpx.post(f"{server.url}/auth/device/token", content=b"{not json", timeout=10,
                   headers={"Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["code"] == "BAD_REQUEST" and r.json()["error"] == "invalid_request"
    r = httpx.post(f"{server.url}/auth/device/token", data={"grant_type": GRANT}, timeout=10)
    assert r.status_code == 400 and r.json()["error"] == "invalid_request"
    r = httpx.post(f"{server.url}/auth/device", json={"interval": 0}, timeout=10)
    assert r.status_code == 400 and r.json()["code"] == "VALIDATION_ERROR"


def test_approving_needs_a_session_token(server: RunixServer) -> None:
    started = start(server)
    r = httpx.post(f"{server.url}/auth/device/approve", json={"user_code": started["user_code"]}, timeout=10)
    assert r.status_code == 401
    alice = server.sign_in()
    cli = alice.client.post("/auth/cli-token", json={"name": "ci"}).json()["token"]
    r = httpx.post(f"{server.url}/auth/device/approve", json={"user_code": started["user_code"]}, timeout=10,
                   headers={"Authorization": f"Bearer {cli}"})
    assert r.status_code == 403
    r = alice.client.post("/auth/device/approve", json={"user_code": "BBBB-CCCC"})
    assert r.status_code == 404
