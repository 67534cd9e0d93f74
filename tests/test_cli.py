"""The real `runix` executable against a real server: sign-in, projects, env vars, domains, tokens, billing, and the
errors a person can act on. Each test has its own HOME and XDG_CONFIG_HOME."""

from __future__ import annotations

import json
import os
import stat
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from tests.dns_server import LoopbackDns, dns  # noqa: F401 - the fixture
from tests.support import ADMIN_EMAIL, Account, CliShell, RunixServer, free_port, read_code, running_server


@pytest.fixture
def shell(tmp_path: Path, server: RunixServer) -> CliShell:
    return CliShell(tmp_path / "home", server.url)


@pytest.fixture
def signed_in(shell: CliShell, server: RunixServer, account: Account) -> CliShell:
    shell.login_with_token(server, account)
    return shell


@pytest.fixture(scope="module")
def rate_limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimpleNamespace]:
    """A server allowing 3 API requests a minute, with the account's budget spent. A `runix projects ls` started
    now has to wait for the window (up to a minute) and retry by itself: it is started here, by the module's first
    test, so that the wait overlaps the other tests, and the module's last test reads its result."""
    tmp = tmp_path_factory.mktemp("rate-limited")
    with running_server(tmp, RUNIX_RATE_LIMIT_PER_MINUTE="3") as server:
        account = server.sign_in()
        token = account.client.post("/auth/cli-token", json={"name": "rate"}).json()["token"]
        shell = CliShell(tmp / "home", server.url, {"RUNIX_TOKEN": token})
        while account.client.get("/user").status_code != 429:
            pass
        write = shell.run("projects", "add", "blocked", expect=1)
        no_wait = CliShell(tmp / "home", server.url, {"RUNIX_TOKEN": token, "RUNIX_RATE_LIMIT_WAIT": "0"}).run(
            "projects", "ls", expect=1)
        waiting = shell.popen("projects", "ls", "--json")
        waiting.stdin.close()  # type: ignore[union-attr]
        waiting.stdin = None
        yield SimpleNamespace(write=write, no_wait=no_wait, waiting=waiting, started=time.monotonic())
        if waiting.poll() is None:
            waiting.kill()
            waiting.communicate()


def test_rate_limited_commands_say_when_to_retry(rate_limited: SimpleNamespace) -> None:
    for result in (rate_limited.write, rate_limited.no_wait):
        assert "Rate limited" in result.stderr and "Retry in" in result.stderr, result.stderr
        assert "Traceback" not in result.stderr


def _command_paths() -> list[list[str]]:
    import typer.main

    from runix.cli.main import app

    paths: list[list[str]] = [[]]

    def walk(group: object, prefix: list[str]) -> None:
        for name, command in getattr(group, "commands", {}).items():
            paths.append([*prefix, name])
            walk(command, [*prefix, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_help_of_every_command(tmp_path: Path) -> None:
    shell = CliShell(tmp_path / "home")
    paths = _command_paths()
    assert {"deploy", "login", "rollback"} <= {p[0] for p in paths if p}
    assert len(paths) > 30
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda p: shell.run(*p, "--help"), paths))
    for path, result in zip(paths, results, strict=True):
        assert "Usage: runix" in result.stdout, (path, result.stdout)
    assert "--project" in results[paths.index(["deploy"])].stdout
    assert shell.run("--version").stdout.startswith("runix ")
    # Usage errors exit 2.
    assert "No such option" in shell.run("projects", "ls", "--nope", expect=2).stderr


def test_login_with_the_mailed_code_then_logout(tmp_path: Path, server: RunixServer) -> None:
    shell = CliShell(tmp_path / "home")  # no RUNIX_API_URL: --api-url says where
    email = f"cli-{uuid.uuid4().hex[:10]}@example.com"
    proc = shell.popen("login", "--api-url", server.url)
    assert proc.stdin is not None
    proc.stdin.write(email + "\n")
    proc.stdin.flush()
    code = read_code(server.maildir, email)
    out, err = proc.communicate(code + "\n", timeout=30)
    assert proc.returncode == 0, err
    assert f"Logged in as {email}" in err

    path = shell.credentials_path
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["api_url"] == server.url and saved["email"] == email
    assert saved["token"].startswith("rnx_c_") and saved["token_id"].startswith("tok_")

    me = shell.json("whoami")
    assert me["email"] == email and me["api_url"] == server.url
    assert shell.run("whoami").stdout.strip() == email
    tokens = shell.json("tokens", "ls")
    # Login swapped the short-lived session token for the CLI token and revoked the session.
    assert [t["kind"] for t in tokens] == ["cli"] and tokens[0]["id"] == saved["token_id"]

    shell.run("logout")
    assert not path.exists()
    r = httpx.get(f"{server.url}/user", headers={"Authorization": f"Bearer {saved['token']}"})
    assert r.status_code == 401
    result = shell.run("whoami", expect=1)
    assert "runix login" in result.stderr
    assert "not logged in" in shell.run("logout").stderr


def test_login_with_a_wrong_code_stores_nothing(shell: CliShell) -> None:
    result = shell.run("login", "--email", "wrong-code@example.com", input="000000\n", expect=1)
    assert "wrong or has expired" in result.stderr
    assert "runix login" in result.stderr
    assert not shell.credentials_path.exists()


def test_login_in_the_browser_with_the_device_code(shell: CliShell, server: RunixServer, account: Account) -> None:
    proc = shell.popen("login", "--web")
    assert proc.stderr is not None
    line = proc.stderr.readline()
    assert "Open " in line and "/dashboard/device" in line, line
    user_code = line.rsplit("code ", 1)[1].strip().rstrip(".")
    r = account.client.post("/auth/device/approve", json={"user_code": user_code})
    assert r.status_code == 200, r.text
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert f"Logged in as {account.email}" in err
    assert shell.json("whoami")["email"] == account.email
    saved = json.loads(shell.credentials_path.read_text())
    assert saved["token"].startswith("rnx_c_")


def test_token_from_the_environment_and_a_revoked_token(shell: CliShell, server: RunixServer,
                                                          account: Account) -> None:
    token = account.client.post("/auth/cli-token", json={"name": "env"}).json()
    env_shell = CliShell(shell.home, server.url, {"RUNIX_TOKEN": token["token"]})
    assert env_shell.json("whoami")["email"] == account.email
    assert not shell.credentials_path.exists()
    assert account.client.delete(f"/auth/tokens/{token['id']}").status_code == 200
    result = env_shell.run("projects", "ls", expect=1)
    assert "expired or was revoked" in result.stderr and "runix login" in result.stderr


def test_unreachable_server_names_the_url(shell: CliShell) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = CliShell(shell.home, url, {"RUNIX_TOKEN": "rnx_c_whatever"}).run("projects", "ls", expect=1)
    assert f"Could not reach the Runix API at {url}" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_configured_proxy_carries_the_requests(signed_in: CliShell) -> None:
    """With HTTP_PROXY set the CLI talks through the proxy (here one where nothing listens, so it fails); NO_PROXY
    exempts the API's host."""
    proxy = f"http://127.0.0.1:{free_port()}"
    failed = CliShell(signed_in.home, signed_in.api_url, {"HTTP_PROXY": proxy}).run("projects", "ls", expect=1)
    assert f"Could not reach the Runix API at {signed_in.api_url}" in failed.stderr
    assert "Traceback" not in failed.stderr
    CliShell(signed_in.home, signed_in.api_url, {"HTTP_PROXY": proxy, "NO_PROXY": "127.0.0.1"}).run("projects", "ls")


def test_projects(signed_in: CliShell, tmp_path: Path) -> None:
    created = signed_in.json("projects", "add", "cli-demo", "--build-command", "make")
    assert created["name"] == "cli-demo" and created["build_command"] == "make"
    assert [p["name"] for p in signed_in.json("projects", "ls")] == ["cli-demo"]
    assert "cli-demo" in signed_in.run("projects", "ls").stdout
    assert signed_in.json("projects", "inspect", "cli-demo")["id"] == created["id"]
    assert "make" in signed_in.run("projects", "inspect", created["id"]).stdout
    assert "already" in signed_in.run("projects", "add", "cli-demo", expect=1).stderr

    # Deleting asks; with no terminal to ask at and no --yes it refuses and changes nothing.
    refused = signed_in.run("projects", "rm", "cli-demo", expect=1)
    assert "Refusing" in refused.stderr and "--yes" in refused.stderr
    assert signed_in.json("projects", "inspect", "cli-demo")["id"] == created["id"]
    signed_in.run("projects", "rm", "cli-demo", "--yes")
    assert signed_in.json("projects", "ls") == []
    assert "not found" in signed_in.run("projects", "inspect", "cli-demo", expect=1).stderr
    # Without --project and outside a deployed folder, project commands are a usage error.
    assert "--project" in signed_in.run("env", "ls", cwd=tmp_path, expect=2).stderr


def test_env_add_ls_pull_rm(signed_in: CliShell, tmp_path: Path) -> None:
    signed_in.run("projects", "add", "env-demo")
    p = ("--project", "env-demo")
    signed_in.run("env", "add", "GREETING", "hello world", *p)
    signed_in.run("env", "add", "API_URL", *p, "--target", "development", "--target", "preview",
                  input='https://api.example.com/"v1"\n')
    signed_in.run("env", "add", "SECRET", "s3cr3t", "--sensitive", *p)
    added = signed_in.json("env", "ls", *p)
    by_key = {v["key"]: v for v in added}
    assert by_key["GREETING"]["value"] == "hello world"
    assert sorted(by_key["API_URL"]["targets"]) == ["development", "preview"]
    assert by_key["API_URL"]["value"] == 'https://api.example.com/"v1"'  # from stdin, newline dropped
    assert "value" not in by_key["SECRET"] and by_key["SECRET"]["type"] == "sensitive"  # as the API answers it
    assert "s3cr3t" not in signed_in.run("env", "ls", *p).stdout
    assert [v["key"] for v in signed_in.json("env", "ls", *p, "--target", "production")] != ["API_URL"]
    assert "already set" in signed_in.run("env", "add", "GREETING", "again", *p, expect=1).stderr

    pulled = signed_in.run("env", "pull", *p, cwd=tmp_path)
    dotenv = tmp_path / ".env"
    lines = dotenv.read_text().splitlines()
    assert 'GREETING="hello world"' in lines and 'API_URL="https://api.example.com/\\"v1\\""' in lines
    assert not any(line.startswith("SECRET") for line in lines)
    assert "SECRET" in pulled.stderr and "Skipped sensitive" in pulled.stderr
    assert stat.S_IMODE(dotenv.stat().st_mode) == 0o600

    signed_in.run("env", "rm", "GREETING", *p)
    assert "GREETING" not in {v["key"] for v in signed_in.json("env", "ls", *p)}
    # Pulling again would change the file: with no terminal it refuses unless --yes.
    assert "Refusing" in signed_in.run("env", "pull", *p, cwd=tmp_path, expect=1).stderr
    assert signed_in.json("env", "pull", *p, "--yes", cwd=tmp_path)["written"] == ["API_URL"]
    assert "GREETING" not in dotenv.read_text()


def test_domains(signed_in: CliShell) -> None:
    signed_in.run("projects", "add", "dom-demo")
    name = f"www.cli-{os.getpid()}-{time.monotonic_ns() % 10**6}.example.com"
    added = signed_in.run("domains", "add", name, "--project", "dom-demo")
    domain = signed_in.json("domains", "ls", "--project", "dom-demo")[0]
    record = domain["verification"]
    assert domain["name"] == name and domain["verified"] is False
    assert f"TXT  {record['name']}  {record['value']}" in added.stdout
    refused = signed_in.run("domains", "rm", name, "--project", "dom-demo", expect=1)
    assert "Refusing" in refused.stderr
    signed_in.run("domains", "rm", name, "--project", "dom-demo", "--yes")
    assert signed_in.json("domains", "ls", "--project", "dom-demo") == []


def test_lists_longer_than_a_page(server: RunixServer, signed_in: CliShell, account: Account) -> None:
    """`env ls`, `env pull`, `env rm`, `domains ls` and `tokens ls` see every row of lists longer than the API's
    largest page (100), in the table and with --json."""
    server.set_plan(account, "enterprise")  # no limit on env vars or domains per project
    c = account.client
    assert c.post("/projects", json={"name": "many"}).status_code == 201
    keys = [f"VAR_{i:03d}" for i in range(250)]
    with ThreadPoolExecutor(4) as pool:
        added = list(pool.map(lambda key: c.post("/projects/many/env", json={
            "key": key, "value": f"value-{key}", "type": "sensitive" if key == "VAR_249" else "plain"}), keys))
        domains = list(pool.map(lambda i: c.post("/projects/many/domains", json={
            "name": f"www.d{i:03d}-{uuid.uuid4().hex[:6]}.example.com"}), range(101)))
        tokens = list(pool.map(lambda i: c.post("/auth/cli-token", json={"name": f"bulk-{i}"}), range(101)))
    assert {r.status_code for r in added + domains + tokens} == {201}
    p = ("--project", "many")

    listed = signed_in.json("env", "ls", *p)
    assert [v["key"] for v in listed] == keys and "value" not in listed[-1]
    assert all(v["value"] == f"value-{v['key']}" for v in listed[:-1])
    table = signed_in.run("env", "ls", *p).stdout
    assert all(f"value-{key}" in table for key in keys[:-1]) and "(sensitive)" in table
    pulled = signed_in.json("env", "pull", *p, "--target", "production", "--yes", cwd=signed_in.home)
    assert pulled["written"] == keys[:-1] and pulled["skipped_sensitive"] == ["VAR_249"]
    signed_in.run("env", "rm", "VAR_248", *p)  # on the third page
    assert [v["key"] for v in signed_in.json("env", "ls", *p)] == keys[:248] + ["VAR_249"]

    names = sorted(r.json()["name"] for r in domains)
    assert [d["name"] for d in signed_in.json("domains", "ls", *p)] == names
    table = signed_in.run("domains", "ls", *p).stdout
    assert all(name in table for name in names)
    token_ids = {r.json()["id"] for r in tokens}
    assert token_ids <= {t["id"] for t in signed_in.json("tokens", "ls")}
    table = signed_in.run("tokens", "ls").stdout
    assert all(token_id in table for token_id in token_ids)


@pytest.fixture(scope="module")
def resolving_server(tmp_path_factory: pytest.TempPathFactory, dns: LoopbackDns) -> Iterator[RunixServer]:  # noqa: F811
    """A server of this module's that looks TXT records up in the loopback DNS server."""
    with running_server(tmp_path_factory.mktemp("runix-dns"), RUNIX_DNS_RESOLVER=dns.address) as s:
        yield s


def test_domains_verify(tmp_path: Path, resolving_server: RunixServer, dns: LoopbackDns) -> None:  # noqa: F811
    shell = CliShell(tmp_path / "home", resolving_server.url)
    shell.login_with_token(resolving_server, resolving_server.sign_in())
    shell.run("projects", "add", "verify-demo")
    name = f"www.{uuid.uuid4().hex[:10]}.example.com"
    record = shell.json("domains", "add", name, "--project", "verify-demo")["verification"]
    pending = shell.run("domains", "verify", name, "--project", "verify-demo", expect=1)
    assert "not verified yet" in pending.stderr, pending.stderr
    assert record["name"] in pending.stderr and record["value"] in pending.stderr  # what to create, again
    dns.records.set(record["name"], record["value"])
    verified = shell.run("domains", "verify", name, "--project", "verify-demo")
    assert f"{name} is verified" in verified.stdout + verified.stderr
    assert shell.json("domains", "ls", "--project", "verify-demo")[0]["verified"] is True
    assert any(url.startswith(f"http://{name}") for url in shell.json("projects", "inspect", "verify-demo")["urls"])


def test_tokens_and_billing(server: RunixServer, signed_in: CliShell, account: Account) -> None:
    tokens = signed_in.json("tokens", "ls")
    saved = json.loads(signed_in.credentials_path.read_text())
    other = next(t for t in tokens if t["kind"] == "session")
    signed_in.run("tokens", "rm", other["id"])
    assert other["id"] not in {t["id"] for t in signed_in.json("tokens", "ls")}
    assert account.client.get("/user").status_code == 401

    billing = signed_in.json("billing")
    assert billing["plan"] == "hobby" and billing["limits"]["deploys_per_hour"] == 5
    table = signed_in.run("billing").stdout
    assert "Plan: Hobby" in table and "deploys per hour" in table
    refused = signed_in.run("billing", "--plan", "pro", expect=1)  # no terminal to ask at
    assert "Refusing" in refused.stderr and signed_in.json("billing")["plan"] == "hobby"
    unknown = signed_in.run("billing", "--plan", "platinum", "--yes", expect=1)
    assert "'hobby', 'pro' or 'enterprise'" in unknown.stderr and "Traceback" not in unknown.stderr
    unpaid = signed_in.run("billing", "--plan", "pro", "--yes", expect=1)  # no payment provider on this server
    assert "operator" in unpaid.stderr and signed_in.json("billing")["plan"] == "hobby"
    operator = CliShell(signed_in.home.parent / "operator", server.url)
    operator.login_with_token(server, server.sign_in(ADMIN_EMAIL))
    assert "is on the pro plan now" in operator.run("billing", "--account", account.email, "--plan", "pro",
                                                    "--yes").stderr  # messages go to stderr
    assert "Plan: Pro" in signed_in.run("billing").stdout
    assert "memory per app (swap included)" in signed_in.run("billing").stdout
    changed = signed_in.json("billing", "--plan", "hobby", "--yes")  # down: always, at once
    assert changed["plan"] == "hobby" and changed["limits"]["deploys_per_hour"] == 5
    assert saved["token"].startswith("rnx_c_")


def test_rate_limited_reads_wait_and_retry(rate_limited: SimpleNamespace) -> None:
    out, err = rate_limited.waiting.communicate(timeout=90)
    assert rate_limited.waiting.returncode == 0, err
    assert "retrying in" in err
    assert json.loads(out) == []


def test_deploy_of_a_missing_folder_is_a_usage_error(tmp_path: Path) -> None:
    """`runix deploy` and `python -m runix.cli.main deploy` (the same Typer app) reject a missing folder alike."""
    shell = CliShell(tmp_path / "home")
    missing = shell.run("deploy", str(tmp_path / "missing"), expect=2)
    via_module = shell.run("deploy", str(tmp_path / "missing"), executable=[sys.executable, "-m", "runix.cli.main"],
                           expect=2)
    assert missing.stderr == via_module.stderr and "is not a folder" in missing.stderr
