"""A restart loses nothing: accounts, tokens, projects, env vars (still decryptable), domains, revocations."""

from __future__ import annotations

import httpx

from tests.api_support import error
from tests.support import RunixServer


def test_restart_keeps_everything(fresh_server: RunixServer) -> None:
    server = fresh_server
    alice = server.sign_in()
    c = alice.client
    cli = c.post("/auth/cli-token", json={"name": "keep"}).json()
    dropped = c.post("/auth/cli-token", json={"name": "drop"}).json()
    assert c.delete(f"/auth/tokens/{dropped['id']}").status_code == 200
    server.set_plan(alice, "pro")
    for i in range(25):
        assert c.post("/projects", json={"name": f"app{i}", "start_command": f"run {i}"}).status_code == 201
    plain = c.post("/projects/app3/env", json={"key": "GREETING", "value": "hello"}).json()
    secret = c.post("/projects/app3/env", json={"key": "SECRET", "value": "s3", "type": "sensitive"}).json()
    domain = c.post("/projects/app3/domains", json={"name": "www.kept.example.com"}).json()
    before = {path: c.get(path).json() for path in ("/user", "/projects", "/projects/app3", "/projects/app3/env",
                                                    "/projects/app3/domains", "/auth/tokens")}
    session_token = alice.token

    server.restart()

    for token in (session_token, cli["token"]):
        with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {token}"}) as again:
            for path, body in before.items():
                r = again.get(path)
                assert r.status_code == 200 and r.json() == body, (path, r.text)
            assert again.get("/billing").json()["plan"] == "pro"
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {session_token}"}) as again:
        env = {v["key"]: v for v in again.get("/projects/app3/env").json()}
        assert env["GREETING"]["value"] == "hello" and "value" not in env["SECRET"]
        assert {plain["id"], secret["id"]} == {v["id"] for v in env.values()}
        assert again.get("/projects/app3/domains").json()[0]["id"] == domain["id"]
        names = []
        url = "/projects?limit=10"
        while url:
            r = again.get(url)
            names += [p["name"] for p in r.json()]
            url = r.links.get("next", {}).get("url")
        assert sorted(names) == sorted(f"app{i}" for i in range(25))
        error(again.post("/projects", json={"name": "app0"}), 409, "CONFLICT")
    error(httpx.get(f"{server.url}/user", headers={"Authorization": f"Bearer {dropped['token']}"}), 401,
          "UNAUTHORIZED")
    assert server.sign_in(alice.email).client.get("/user").json()["id"] == before["/user"]["id"]
