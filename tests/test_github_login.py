"""Sign-in with GitHub over real HTTP: Runix server <-> a local OAuth server speaking GitHub's protocol."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from tests.fake_github import FakeGitHub, GitHubUser
from tests.support import RunixServer, running_server


@pytest.fixture(scope="module")
def github() -> Iterator[FakeGitHub]:
    with FakeGitHub() as fake:
        yield fake


@pytest.fixture(scope="module")
def gh_server(tmp_path_factory: pytest.TempPathFactory, github: FakeGitHub) -> Iterator[RunixServer]:
    with running_server(tmp_path_factory.mktemp("github"), **github.env()) as server:
        yield server


def browser(server: RunixServer) -> httpx.Client:
    """A cookie-keeping client that follows redirects by hand, like a browser would, step by step."""
    return httpx.Client(base_url=server.url, timeout=10, headers={"Accept": "text/html,application/xhtml+xml"})


def sign_in_through_github(server: RunixServer, github: FakeGitHub, user: GitHubUser,
                           next_path: str = "/dashboard") -> tuple[httpx.Client, httpx.Response]:
    github.current_user = user
    client = browser(server)
    start = client.get("/auth/github", params={"next": next_path})
    assert start.status_code == 302, start.text
    to_github = httpx.get(start.headers["location"], timeout=10)  # GitHub's authorize page sends it straight back
    assert to_github.status_code == 302
    back = to_github.headers["location"]
    assert back.startswith(f"{server.url}/auth/github/callback?")
    return client, client.get(back)


def test_authorize_redirect_carries_state_and_the_callback(gh_server: RunixServer, github: FakeGitHub) -> None:
    client = browser(gh_server)
    r = client.get("/auth/github")
    assert r.status_code == 302
    url = urlsplit(r.headers["location"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}{url.path}" == f"{github.base_url}/login/oauth/authorize"
    assert query["client_id"] == github.client_id and query["response_type"] == "code"
    assert query["redirect_uri"] == f"{gh_server.url}/auth/github/callback"
    assert len(query["state"]) >= 20 and "user:email" in query["scope"]
    cookie = r.headers["set-cookie"].lower()
    assert "runix_github_state=" in cookie and "httponly" in cookie and "samesite=lax" in cookie
    assert "secure" not in cookie
    # Behind an HTTPS proxy the cookies are Secure.
    r = client.get("/auth/github", headers={"X-Forwarded-Proto": "https"})
    assert "secure" in r.headers["set-cookie"].lower()


def test_new_account_gets_a_session_cookie(gh_server: RunixServer, github: FakeGitHub) -> None:
    email = f"new-{uuid.uuid4().hex[:8]}@example.com"
    client, r = sign_in_through_github(gh_server, github, GitHubUser(id=1001, login="newbie", email=email),
                                       next_path="/dashboard/billing")
    assert r.status_code == 302 and r.headers["location"] == "/dashboard/billing"
    session = client.cookies["runix_session"]
    assert session.startswith("rnx_s_")
    set_cookie = ";".join(r.headers.get_list("set-cookie")).lower()
    assert "httponly" in set_cookie and "samesite=lax" in set_cookie
    me = httpx.get(f"{gh_server.url}/user", headers={"Authorization": f"Bearer {session}"}, timeout=10)
    assert me.status_code == 200 and me.json()["email"] == email and me.json()["name"] is None
    page = client.get("/dashboard/billing")
    assert page.status_code == 200 and "Current plan" in page.text


def test_github_identity_links_to_the_account_with_the_same_email(gh_server: RunixServer,
                                                                   github: FakeGitHub) -> None:
    existing = gh_server.sign_in()  # by email code first
    account_id = existing.client.get("/user").json()["id"]
    client, r = sign_in_through_github(gh_server, github,
                                       GitHubUser(id=2002, login="linked", email=existing.email, name="Linda"))
    assert r.status_code == 302
    token = client.cookies["runix_session"]
    me = httpx.get(f"{gh_server.url}/user", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    assert me["id"] == account_id and me["name"] == "Linda"
    # Later sign-ins find the account by its GitHub id, even after the GitHub email changed.
    client, r = sign_in_through_github(gh_server, github,
                                       GitHubUser(id=2002, login="linked", email="changed@example.com"))
    token = client.cookies["runix_session"]
    me = httpx.get(f"{gh_server.url}/user", headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    assert me["id"] == account_id


def test_the_page_to_return_to_may_hold_a_bar(gh_server: RunixServer, github: FakeGitHub) -> None:
    # The state cookie keeps state|expires|next: a "|" in next must not break the sign-in.
    _, r = sign_in_through_github(gh_server, github, GitHubUser(id=2020, login="barred", email="bar@example.com"),
                                  next_path="/dashboard/projects?q=a|b")
    assert r.status_code == 302 and r.headers["location"] == "/dashboard/projects?q=a%7Cb"  # sent percent-encoded


def test_unverified_email_is_refused(gh_server: RunixServer, github: FakeGitHub) -> None:
    client, r = sign_in_through_github(gh_server, github, GitHubUser(id=3003, login="shady", email="x@example.com",
                                                                     email_verified=False))
    assert r.status_code == 403
    assert "text/html" in r.headers["content-type"] and "no verified primary email" in r.text
    assert "runix_session" not in client.cookies


def test_state_must_match(gh_server: RunixServer, github: FakeGitHub) -> None:
    github.current_user = GitHubUser(id=4004, login="victim", email="victim@example.com")
    # A callback with a code but without the state cookie (a forged or replayed link) is refused.
    r = httpx.get(f"{gh_server.url}/auth/github/callback", params={"code": "abc", "state": "forged"}, timeout=10)
    assert r.status_code == 400 and "state did not match" in r.json()["error"]  # an API client gets JSON
    client = browser(gh_server)
    start = client.get("/auth/github")
    back = httpx.get(start.headers["location"], timeout=10).headers["location"]
    r = client.get(back.replace("state=", "state=x"))
    assert r.status_code == 400 and "runix_session" not in client.cookies
    # A cancelled authorization on GitHub's side.
    r = client.get("/auth/github/callback", params={"error": "access_denied"})
    assert r.status_code == 400 and "did not authorize" in r.text


def test_a_code_works_once(gh_server: RunixServer, github: FakeGitHub) -> None:
    client, r = sign_in_through_github(gh_server, github, GitHubUser(id=5005, login="once", email="once@example.com"))
    assert r.status_code == 302
    replay = browser(gh_server)
    start = replay.get("/auth/github")
    state = parse_qs(urlsplit(start.headers["location"]).query)["state"][0]
    used_code = parse_qs(urlsplit(str(r.request.url)).query)["code"][0]
    r = replay.get("/auth/github/callback", params={"code": used_code, "state": state})
    assert r.status_code == 400 and "GitHub refused the sign-in" in r.text


def test_not_configured_is_a_clear_page(server: RunixServer) -> None:
    r = httpx.get(f"{server.url}/auth/github", timeout=10)
    assert r.status_code == 400 and r.json()["code"] == "BAD_REQUEST" and "RUNIX_GITHUB_CLIENT_ID" in r.json()["error"]
    r = httpx.get(f"{server.url}/auth/github", timeout=10, headers={"Accept": "text/html"})
    assert r.status_code == 400 and "text/html" in r.headers["content-type"] and "RUNIX_GITHUB_CLIENT_ID" in r.text
    assert "Continue with GitHub" not in httpx.get(f"{server.url}/dashboard/login", timeout=10).text
