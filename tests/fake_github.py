"""A local OAuth server that speaks GitHub's protocol over real HTTP, for sign-in tests without the internet.

Web side (the base URL): `GET /login/oauth/authorize` sends the browser back to the app's callback with `code` and
`state` (as if the signed-in GitHub user clicked "Authorize"); `POST /login/oauth/access_token` exchanges the code
(form body, JSON answer when asked with `Accept: application/json`, errors as GitHub gives them: 200 + `error`).
API side (`<base>/api/v3`, as on GitHub Enterprise): `GET /user` and `GET /user/emails` with the access token.
"""

from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlencode, urlsplit

from tests.fake_http import LocalService


@dataclass
class GitHubUser:
    id: int
    login: str
    email: str
    name: str | None = None
    email_verified: bool = True


@dataclass
class FakeGitHub(LocalService):
    client_id: str = "Iv1.runixtest"
    client_secret: str = field(default_factory=lambda: secrets.token_hex(20))
    # Who is "signed in to GitHub" in the browser; the next authorize request signs in as this user.
    current_user: GitHubUser | None = None
    codes: dict[str, tuple[GitHubUser, str, float]] = field(default_factory=dict)  # code -> user, redirect, expiry
    tokens: dict[str, GitHubUser] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)

    @property
    def base_url(self) -> str:
        return self.url

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/v3"

    def env(self) -> dict[str, str]:
        """The RUNIX_GITHUB_* settings pointing a Runix server at this fake."""
        return {"RUNIX_GITHUB_CLIENT_ID": self.client_id, "RUNIX_GITHUB_CLIENT_SECRET": self.client_secret,
                "RUNIX_GITHUB_BASE_URL": self.base_url, "RUNIX_GITHUB_API_URL": self.api_url}


class _Handler(BaseHTTPRequestHandler):
    service: FakeGitHub

    @property
    def github(self) -> FakeGitHub:
        return self.service

    def log_message(self, format: str, *args: object) -> None:  # keep test output quiet
        pass

    def _json(self, status: int, body: object) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        url = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        self.github.requests.append(f"GET {url.path}")
        if url.path == "/login/oauth/authorize":
            return self._authorize(query)
        user = self._token_user()
        if url.path.startswith("/api/v3/") and user is None:
            return self._json(401, {"message": "Bad credentials", "documentation_url": "https://docs.github.com/rest"})
        if url.path == "/api/v3/user":
            return self._json(200, {"id": user.id, "login": user.login, "name": user.name, "type": "User",
                                    "email": user.email if user.email_verified else None})
        if url.path == "/api/v3/user/emails":
            return self._json(200, [
                {"email": user.email, "primary": True, "verified": user.email_verified, "visibility": "private"},
                {"email": f"{user.id}+{user.login}@users.noreply.github.com", "primary": False, "verified": True,
                 "visibility": None},
            ])
        self._json(404, {"message": "Not Found"})

    def _authorize(self, query: dict[str, str]) -> None:
        redirect = query.get("redirect_uri", "")
        if query.get("client_id") != self.github.client_id or not redirect.startswith("http"):
            self.send_response(404)
            self.end_headers()
            return
        user = self.github.current_user
        if user is None:  # the person clicked "Cancel" on GitHub
            params = {"error": "access_denied", "error_description": "The user has denied your application access.",
                      "state": query.get("state", "")}
        else:
            code = secrets.token_hex(10)
            self.github.codes[code] = (user, redirect, time.monotonic() + 600)
            params = {"code": code, "state": query.get("state", "")}
        self.send_response(302)
        self.send_header("Location", f"{redirect}{'&' if '?' in redirect else '?'}{urlencode(params)}")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:  # noqa: N802
        url = urlsplit(self.path)
        self.github.requests.append(f"POST {url.path}")
        if url.path != "/login/oauth/access_token":
            return self._json(404, {"message": "Not Found"})
        length = int(self.headers.get("Content-Length") or 0)
        form = {k: v[0] for k, v in parse_qs(self.rfile.read(length).decode()).items()}
        if form.get("client_id") != self.github.client_id or form.get("client_secret") != self.github.client_secret:
            return self._token_answer({"error": "incorrect_client_credentials",
                                       "error_description": "The client_id and/or client_secret passed are incorrect."})
        found = self.github.codes.pop(form.get("code", ""), None)
        if found is None or found[2] < time.monotonic() or form.get("redirect_uri", found[1]) != found[1]:
            return self._token_answer({"error": "bad_verification_code",
                                       "error_description": "The code passed is incorrect or expired."})
        token = "gho_" + secrets.token_hex(18)
        self.github.tokens[token] = found[0]
        self._token_answer({"access_token": token, "token_type": "bearer", "scope": "read:user,user:email"})

    def _token_answer(self, body: dict[str, str]) -> None:
        """GitHub answers 200 even for errors, as a form unless the client asked for JSON."""
        if "application/json" in self.headers.get("Accept", ""):
            return self._json(200, body)
        data = urlencode(body).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _token_user(self) -> GitHubUser | None:
        scheme, _, value = self.headers.get("Authorization", "").partition(" ")
        if scheme.lower() not in ("bearer", "token"):
            return None
        return self.github.tokens.get(value.strip())


FakeGitHub.handler = _Handler
