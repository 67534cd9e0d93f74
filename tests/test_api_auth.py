"""Auth over HTTP: email codes, session and CLI tokens, expiry, revocation, logout, and what the database keeps."""

from __future__ import annotations

import hashlib
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import httpx

from tests.api_support import assert_paginated, error, run_sql, stored_text
from tests.support import Account, RunixServer, read_code


def new_email() -> str:
    return f"auth-{uuid.uuid4().hex[:10]}@example.com"


def request_code(server: RunixServer, email: str) -> str:
    r = httpx.post(f"{server.url}/auth/email", json={"email": email})
    assert r.status_code == 200 and r.json() == {"sent": True}, r.text
    return read_code(server.maildir, email)


def verify(server: RunixServer, email: str, code: str) -> httpx.Response:
    return httpx.post(f"{server.url}/auth/email/verify", json={"email": email, "code": code})


def as_token(server: RunixServer, token: str, method: str, path: str, **kwargs) -> httpx.Response:
    return httpx.request(method, f"{server.url}{path}", headers={"Authorization": f"Bearer {token}"}, **kwargs)



def test_sign_in_by_code_creates_the_account_once(server: RunixServer) -> None:
    email = new_email()
    r = verify(server, email, request_code(server, email))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["token"].startswith("rnx_s_") and len(body["token"]) > 40
    expires = datetime.fromisoformat(body["expires_at"])
    assert abs(expires - (datetime.now(UTC) + timedelta(days=30))) < timedelta(minutes=5)
    user = body["user"]
    assert set(user) == {"id", "email", "name", "plan", "created_at"}
    assert user["id"].startswith("usr_") and user["email"] == email and user["plan"] == "hobby"

    again = verify(server, email, request_code(server, email))
    assert again.status_code == 200 and again.json()["user"]["id"] == user["id"]
    assert again.json()["token"] != body["token"]
    me = as_token(server, again.json()["token"], "GET", "/user")
    assert me.status_code == 200 and me.json() == user


def test_a_code_works_once_and_a_new_code_replaces_the_old(server: RunixServer) -> None:
    email = new_email()
    first = request_code(server, email)
    second = request_code(server, email)
    if first != second:
        error(verify(server, email, first), 401, "UNAUTHORIZED")
    assert verify(server, email, second).status_code == 200
    error(verify(server, email, second), 401, "UNAUTHORIZED")


def test_five_wrong_codes_then_429_even_for_the_right_one(server: RunixServer) -> None:
    email = new_email()
    code = request_code(server, email)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    for _ in range(5):
        error(verify(server, email, wrong), 401, "UNAUTHORIZED")
    r = verify(server, email, code)
    error(r, 429, "RATE_LIMITED")
    assert int(r.headers["Retry-After"]) >= 1
    # A new code starts a new count.
    assert verify(server, email, request_code(server, email)).status_code == 200


def test_concurrent_guesses_get_five_tries_and_a_code_signs_in_once(server: RunixServer) -> None:
    email = new_email()
    code = request_code(server, email)
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    with ThreadPoolExecutor(10) as pool:
        statuses = sorted(pool.map(lambda _: verify(server, email, wrong).status_code, range(20)))
    assert statuses == [401] * 5 + [429] * 15

    email = new_email()
    code = request_code(server, email)
    with ThreadPoolExecutor(8) as pool:
        statuses = sorted(pool.map(lambda _: verify(server, email, code).status_code, range(8)))
    assert statuses == [200] + [401] * 7


def test_a_code_expires_after_ten_minutes(server: RunixServer) -> None:
    email = new_email()
    code = request_code(server, email)
    (expires_at,) = run_sql(server, "SELECT expires_at FROM login_codes WHERE email = :e", e=email)[0]
    created = run_sql(server, "SELECT created_at FROM login_codes WHERE email = :e", e=email)[0][0]
    as_dt = [v if isinstance(v, datetime) else datetime.fromisoformat(v) for v in (expires_at, created)]
    assert timedelta(minutes=9) < as_dt[0] - as_dt[1] <= timedelta(minutes=10)
    past = datetime.now(UTC) - timedelta(seconds=1)
    run_sql(server, "UPDATE login_codes SET expires_at = :t WHERE email = :e", t=past, e=email)
    error(verify(server, email, code), 401, "UNAUTHORIZED")


def test_session_token_expires(server: RunixServer, account: Account) -> None:
    assert account.client.get("/user").status_code == 200
    digest = hashlib.sha256(account.token.encode()).hexdigest()
    past = datetime.now(UTC) - timedelta(seconds=1)
    assert run_sql(server, "SELECT count(*) FROM tokens WHERE token_hash = :h", h=digest) == [(1,)]
    run_sql(server, "UPDATE tokens SET expires_at = :t WHERE token_hash = :h", t=past, h=digest)
    body = error(account.client.get("/user"), 401, "UNAUTHORIZED")
    assert "expired" in body["error"]
    error(account.client.get("/projects"), 401, "UNAUTHORIZED")


def test_cli_token_is_made_only_with_a_session_token(server: RunixServer, account: Account) -> None:
    r = account.client.post("/auth/cli-token", json={"name": "laptop"})
    assert r.status_code == 201, r.text
    created = r.json()
    assert created["token"].startswith("rnx_c_") and created["id"].startswith("tok_")
    assert created["name"] == "laptop" and created["expires_at"] is None and created["created_at"]
    cli = created["token"]
    assert as_token(server, cli, "GET", "/user").json()["email"] == account.email
    error(as_token(server, cli, "POST", "/auth/cli-token", json={}), 403, "FORBIDDEN")
    unnamed = account.client.post("/auth/cli-token")
    assert unnamed.status_code == 201 and unnamed.json()["name"]
    error(account.client.post("/auth/cli-token", json={"name": ""}), 400, "VALIDATION_ERROR")
    error(httpx.post(f"{server.url}/auth/cli-token"), 401, "UNAUTHORIZED")


def test_tokens_are_listed_without_values_and_revoked_one_by_one(server: RunixServer, account: Account) -> None:
    cli = account.client.post("/auth/cli-token", json={"name": "ci"}).json()
    r = account.client.get("/auth/tokens")
    assert r.status_code == 200
    listed = {t["id"]: t for t in r.json()}
    assert cli["id"] in listed and listed[cli["id"]]["kind"] == "cli"
    assert any(t["kind"] == "session" for t in listed.values())
    assert all("token" not in t for t in listed.values())
    assert cli["token"] not in r.text and account.token not in r.text

    r = account.client.delete(f"/auth/tokens/{cli['id']}")
    assert r.status_code == 200 and r.json()["id"] == cli["id"]
    error(as_token(server, cli["token"], "GET", "/user"), 401, "UNAUTHORIZED")
    assert cli["id"] not in {t["id"] for t in account.client.get("/auth/tokens").json()}
    error(account.client.delete(f"/auth/tokens/{cli['id']}"), 404, "NOT_FOUND")
    error(account.client.delete("/auth/tokens/tok_doesnotexist"), 404, "NOT_FOUND")


def test_tokens_page_newest_first_with_a_link_header(account: Account) -> None:
    session = [t["id"] for t in account.client.get("/auth/tokens").json()]
    made = [account.client.post("/auth/cli-token", json={"name": f"ci-{i}"}).json()["id"] for i in range(6)]
    assert len(session) == 1
    assert_paginated(account.client, "/auth/tokens", sorted(session + made, reverse=True))  # ids sort by time


def test_logout_revokes_only_the_token_used(server: RunixServer) -> None:
    email = new_email()
    first = server.sign_in(email)
    second = server.sign_in(email)
    r = first.client.post("/auth/logout")
    assert r.status_code == 200 and r.json() == {"revoked": True}
    body = error(first.client.get("/user"), 401, "UNAUTHORIZED")
    assert "revoked" in body["error"]
    error(first.client.post("/auth/logout"), 401, "UNAUTHORIZED")
    assert second.client.get("/user").status_code == 200


def test_one_account_cannot_see_or_revoke_anothers_tokens(server: RunixServer) -> None:
    alice, bob = server.sign_in(), server.sign_in()
    alice_cli = alice.client.post("/auth/cli-token", json={"name": "alice"}).json()
    assert alice_cli["id"] not in {t["id"] for t in bob.client.get("/auth/tokens").json()}
    error(bob.client.delete(f"/auth/tokens/{alice_cli['id']}"), 404, "NOT_FOUND")
    assert as_token(server, alice_cli["token"], "GET", "/user").status_code == 200


def test_missing_malformed_and_unknown_tokens_get_401(server: RunixServer) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer"},
                    {"Authorization": "Bearer rnx_s_notarealtoken"}, {"Authorization": "Bearer " + "x" * 5000}):
        r = httpx.get(f"{server.url}/projects", headers=headers)
        error(r, 401, "UNAUTHORIZED")
        assert "X-RateLimit-Limit" not in r.headers


def test_tokens_and_codes_are_not_stored_in_clear_text(server: RunixServer) -> None:
    email = new_email()
    code = request_code(server, email)
    session = verify(server, email, code).json()["token"]
    cli = as_token(server, session, "POST", "/auth/cli-token", json={"name": "x"}).json()["token"]
    stored = stored_text(server)
    for token in (session, cli):
        assert token not in stored and token.split("_", 2)[2] not in stored
        assert hashlib.sha256(token.encode()).hexdigest() in stored
    (code_hash,) = run_sql(server, "SELECT code_hash FROM login_codes WHERE email = :e", e=email)[0]
    assert len(code_hash) == 64 and code not in code_hash
    assert code_hash != hashlib.sha256(code.encode()).hexdigest()  # keyed, so 10^6 guesses do not reverse it
