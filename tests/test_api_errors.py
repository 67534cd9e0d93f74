"""Errors for every kind of bad request, the 500 path, and the platform endpoints (healthz, metrics, openapi)."""

from __future__ import annotations

import os
from pathlib import Path

import httpx
import pytest

from runix.client import RunixAPIError, RunixClient
from tests.api_support import error, run_sql
from tests.support import ADMIN_EMAIL, Account, RunixServer, running_server

# Every endpoint of api.md this issue owns, as (method, OpenAPI path).
ENDPOINTS = [
    ("post", "/auth/email"), ("post", "/auth/email/verify"), ("post", "/auth/cli-token"), ("get", "/auth/tokens"),
    ("delete", "/auth/tokens/{token_id}"), ("post", "/auth/logout"), ("get", "/user"),
    ("post", "/projects"), ("get", "/projects"), ("get", "/projects/{project}"), ("patch", "/projects/{project}"),
    ("delete", "/projects/{project}"),
    ("get", "/projects/{project}/env"), ("post", "/projects/{project}/env"),
    ("patch", "/projects/{project}/env/{env_id}"), ("delete", "/projects/{project}/env/{env_id}"),
    ("post", "/projects/{project}/domains"), ("get", "/projects/{project}/domains"),
    ("post", "/projects/{project}/domains/{name}/verify"), ("delete", "/projects/{project}/domains/{name}"),
    ("get", "/billing"), ("put", "/billing/plan"), ("get", "/healthz"), ("get", "/metrics"),
]
PUBLIC = {"/auth/email", "/auth/email/verify", "/healthz"}


def test_unknown_routes_and_methods_are_404_in_the_error_shape(server: RunixServer, account: Account) -> None:
    for client in (account.client, httpx.Client(base_url=server.url)):
        error(client.get("/nope"), 404, "NOT_FOUND")
        error(client.get("/projects/x/nothing/here"), 404, "NOT_FOUND")
        error(client.put("/projects"), 404, "NOT_FOUND")
        error(client.delete("/billing"), 404, "NOT_FOUND")
        error(client.post("/healthz"), 404, "NOT_FOUND")


def test_bad_bodies_are_400_never_422(server: RunixServer, account: Account) -> None:
    c = account.client
    json_header = {"content-type": "application/json"}
    body = error(c.post("/projects", content=b'{"name": "x",', headers=json_header), 400, "BAD_REQUEST")
    assert "JSON" in body["error"]
    error(c.post("/projects", content=b"\xff\xfe", headers=json_header), 400, "BAD_REQUEST")
    error(c.post("/projects", json=["name"]), 400, "VALIDATION_ERROR")
    error(c.post("/projects", json="name"), 400, "VALIDATION_ERROR")
    error(c.post("/projects"), 400, "VALIDATION_ERROR")
    error(c.post("/projects", content=b"name=x", headers={"content-type": "application/x-www-form-urlencoded"}),
          400, "VALIDATION_ERROR")
    body = error(c.post("/projects", json={"name": 12}), 400, "VALIDATION_ERROR")
    assert body["details"] == [{"field": "name", "message": "Input should be a valid string"}]
    body = error(c.post("/projects", json={"name": "ok", "owner": "me"}), 400, "VALIDATION_ERROR")
    assert body["details"][0]["field"] == "owner"
    error(c.put("/billing/plan", json={"plan": "platinum"}), 400, "VALIDATION_ERROR")
    error(c.put("/billing/plan", json={"plan": None}), 400, "VALIDATION_ERROR")
    error(c.post("/projects", json={"name": "nul\x00"}), 400, "VALIDATION_ERROR")
    error(c.post("/auth/cli-token", json={"name": "a\x00b"}), 400, "VALIDATION_ERROR")
    error(httpx.post(f"{server.url}/auth/email", json={"email": "not-an-address"}), 400, "VALIDATION_ERROR")
    error(httpx.post(f"{server.url}/auth/email/verify", json={"email": "a@example.com"}), 400, "VALIDATION_ERROR")


def test_control_characters_in_paths_are_4xx(account: Account) -> None:
    c = account.client
    assert c.post("/projects", json={"name": "ctl"}).status_code == 201
    for path in ("/projects/a%00b", "/projects/ctl/env/env_%00", "/projects/ctl/domains/a%00.com/verify",
                 "/auth/tokens/tok_%00"):
        method = "post" if path.endswith("verify") else "get" if path.startswith("/projects/a") else "delete"
        r = c.request(method, path)
        assert r.status_code in (400, 404), (path, r.status_code, r.text)
        assert r.json()["code"] in ("BAD_REQUEST", "NOT_FOUND")


def test_oversize_bodies_are_400(server: RunixServer, account: Account) -> None:
    big = b'{"name": "' + b"x" * (2 * 1024 * 1024) + b'"}'
    body = error(account.client.post("/projects", content=big, headers={"content-type": "application/json"}),
                 400, "BAD_REQUEST")
    assert "too large" in body["error"]

    def chunks():  # no Content-Length: the limit holds while the body streams in
        for _ in range(40):
            yield b"x" * 65536

    r = account.client.post("/projects", content=chunks(), headers={"content-type": "application/json"})
    assert "too large" in error(r, 400, "BAD_REQUEST")["error"]
    assert account.client.get("/user").status_code == 200


def test_an_oversize_upload_sent_in_chunks_says_so(tmp_path: Path) -> None:
    """`runix deploy` streams its archive with chunked encoding: over the limit, the answer says the body is too
    large (not that the form could not be parsed), and nothing is deployed."""
    with running_server(tmp_path, RUNIX_MAX_UPLOAD_BYTES="100000") as server:
        account = server.sign_in()
        assert account.client.post("/projects", json={"name": "big"}).status_code == 201
        with RunixClient(server.url, account.token) as sdk:
            with pytest.raises(RunixAPIError) as refused:
                sdk.create_deployment("big", (os.urandom(65536) for _ in range(40)))
            assert (refused.value.status, refused.value.code) == (400, "BAD_REQUEST")
            assert "too large" in refused.value.message
            assert sdk.list_deployments("big") == []


def test_an_unexpected_failure_is_500_without_a_traceback(server: RunixServer, account: Account) -> None:
    c = account.client
    assert c.post("/projects", json={"name": "broken"}).status_code == 201
    var = c.post("/projects/broken/env", json={"key": "K", "value": "v"}).json()
    run_sql(server, "UPDATE env_vars SET value_encrypted = 'not-a-fernet-token' WHERE id = :i", i=var["id"])
    r = c.get("/projects/broken/env")
    assert r.status_code == 500
    assert r.json() == {"error": r.json()["error"], "code": "INTERNAL_ERROR"}
    for leak in ("Traceback", "File \"", "RuntimeError", "fernet", "InvalidToken", "/src/runix"):
        assert leak not in r.text
    assert c.get("/projects/broken").status_code == 200  # the server carries on


def test_healthz_metrics_and_docs(server: RunixServer, account: Account) -> None:
    r = httpx.get(f"{server.url}/healthz")
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    error(httpx.get(f"{server.url}/metrics"), 401, "UNAUTHORIZED")
    error(account.client.get("/metrics"), 403, "FORBIDDEN")  # server-wide figures: not for every account
    r = server.sign_in(ADMIN_EMAIL).client.get("/metrics")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    assert 'runix_http_requests_total{method="GET",route="/healthz",status="200"}' in r.text
    assert "runix_http_request_duration_seconds_bucket" in r.text
    docs = httpx.get(f"{server.url}/docs")
    assert docs.status_code == 200 and "text/html" in docs.headers["content-type"] and "openapi.json" in docs.text


def test_openapi_describes_every_endpoint_with_its_errors(server: RunixServer) -> None:
    r = httpx.get(f"{server.url}/openapi.json")
    assert r.status_code == 200
    spec = r.json()
    assert "422" not in r.text and "HTTPValidationError" not in r.text
    assert "ErrorBody" in spec["components"]["schemas"]
    for method, path in ENDPOINTS:
        op = spec["paths"][path][method]
        assert op.get("summary") or op.get("description"), (method, path)
        documented = set(op["responses"])
        assert "500" in documented, (method, path, documented)
        if op.get("parameters") or op.get("requestBody"):
            assert "400" in documented, (method, path, documented)
        if path not in PUBLIC:
            assert {"401", "429"} <= documented, (method, path, documented)
            assert op.get("security"), (method, path)
        if "{" in path:
            assert "404" in documented, (method, path, documented)
        for status in documented - {"200", "201"}:
            content = op["responses"][status]["content"]["application/json"]["schema"]
            assert content == {"$ref": "#/components/schemas/ErrorBody"}, (method, path, status)
    assert "409" in spec["paths"]["/projects"]["post"]["responses"]
    assert "409" in spec["paths"]["/projects/{project}/env"]["post"]["responses"]
    assert "409" in spec["paths"]["/projects/{project}/domains"]["post"]["responses"]
    assert "403" in spec["paths"]["/auth/cli-token"]["post"]["responses"]
