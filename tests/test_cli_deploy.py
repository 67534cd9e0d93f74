"""`runix deploy` and the deployment commands, with the real executable, server, build and router."""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from runix.client import RunixClient
from tests.support import ROOT, CliShell, RunixServer

EXAMPLES = sorted(p.name for p in (ROOT / "examples").iterdir() if p.is_dir())


@pytest.fixture(scope="module")
def deployer(server: RunixServer, tmp_path_factory: pytest.TempPathFactory) -> CliShell:
    """A signed-in shell whose account is on the Enterprise plan (Hobby allows 5 deploys an hour)."""
    account = server.sign_in()
    server.set_plan(account, "enterprise")
    shell = CliShell(tmp_path_factory.mktemp("deployer") / "home", server.url)
    shell.login_with_token(server, account)
    return shell


@pytest.fixture(scope="module")
def router(server: RunixServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"http://127.0.0.1:{server.router_port}", timeout=30) as client:
        yield client


def through_router(router: httpx.Client, url: str, path: str = "/") -> httpx.Response:
    return router.get(path, headers={"Host": urlsplit(url).hostname or ""})


def site(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "index.html").write_text(f"<!doctype html><title>{text}</title><p>{text}</p>\n")
    return folder


def test_deploy_each_example(deployer: CliShell, router: httpx.Client, tmp_path: Path) -> None:
    assert {"static", "flask", "fastapi", "express", "procfile"} <= set(EXAMPLES)
    folders = []
    for name in EXAMPLES:
        folders.append(tmp_path / name)
        shutil.copytree(ROOT / "examples" / name, folders[-1])

    def deploy(folder: Path):
        return deployer.run("deploy", str(folder), "--prod", "--yes", timeout=240)

    with ThreadPoolExecutor(len(folders)) as pool:
        results = list(pool.map(deploy, folders))
    for folder, result in zip(folders, results, strict=True):
        url = result.stdout.strip().splitlines()[-1]
        assert url.startswith(f"http://{folder.name}-"), (folder.name, result.stdout, result.stderr)
        assert "Uploading" in result.stderr and "Ready" in result.stderr
        response = through_router(router, url)
        assert response.status_code == 200, (folder.name, response.status_code, response.text[:300])
        link = json.loads((folder / ".runix" / "project.json").read_text())
        assert link["name"] == folder.name and link["api_url"] == deployer.api_url
        production = deployer.json("projects", "inspect", cwd=folder)["urls"][0]
        assert through_router(router, production).status_code == 200


def test_rollback_promote_rm(deployer: CliShell, router: httpx.Client, tmp_path: Path) -> None:
    folder = site(tmp_path / "rollback-demo", "one")
    first = json.loads(deployer.run("deploy", str(folder), "--prod", "--yes", "--json").stdout)
    assert first["status"] == "READY" and first["target"] == "production"
    site(folder, "two")
    second = json.loads(deployer.run("deploy", "--prod", "--json", cwd=folder).stdout)  # the linked project
    assert second["project_id"] == first["project_id"]
    production = deployer.json("projects", "inspect", cwd=folder)["urls"][0]
    assert "two" in through_router(router, production).text

    refused = deployer.run("rollback", cwd=folder, expect=1)
    assert "Refusing" in refused.stderr and "--yes" in refused.stderr
    assert "two" in through_router(router, production).text
    rolled = deployer.run("rollback", "--yes", cwd=folder)
    assert "Rolled back" in rolled.stderr
    assert "one" in through_router(router, production).text
    assert deployer.json("projects", "inspect", cwd=folder)["production_deployment_id"] == first["id"]

    assert "Refusing" in deployer.run("promote", second["id"], expect=1).stderr
    assert deployer.json("promote", second["id"], "--yes")["is_production"] is True
    assert "two" in through_router(router, production).text

    in_use = deployer.run("rm", second["id"], "--yes", expect=1)  # the current production deployment: 409
    assert "Error:" in in_use.stderr and "Traceback" not in in_use.stderr
    assert "Refusing" in deployer.run("rm", first["id"], expect=1).stderr
    deployer.run("rm", first["id"], "--yes")
    listed = deployer.json("deployments", "ls", cwd=folder)
    assert [d["id"] for d in listed] == [second["id"]] and listed[0]["is_production"]
    assert first["id"] not in deployer.run("deployments", "ls", "--project", "rollback-demo").stdout
    assert deployer.json("deployments", "inspect", second["id"])["url"] == second["url"]

    lines = [json.loads(line) for line in deployer.run("logs", second["id"], "--json").stdout.splitlines()]
    assert any("static" in e["text"] for e in lines) and {"id", "type", "text"} <= set(lines[0])
    assert "static" in deployer.run("logs", second["id"], "-f").stdout  # settled: replays, then ends


def test_a_failing_build_exits_1_and_production_keeps_serving(deployer: CliShell, router: httpx.Client,
                                                                tmp_path: Path) -> None:
    folder = site(tmp_path / "fails", "still here")
    deployer.run("deploy", str(folder), "--prod", "--yes")
    project = deployer.json("projects", "inspect", cwd=folder)
    token = json.loads(deployer.credentials_path.read_text())["token"]
    with RunixClient(deployer.api_url or "", token) as sdk:
        sdk.update_project(project["id"], build_command="echo broken build >&2; exit 3")
    failed = deployer.run("deploy", "--prod", cwd=folder, expect=1)
    assert "broken build" in failed.stderr  # the build log streamed live
    assert "ended ERROR" in failed.stderr and "runix logs" in failed.stderr
    assert "still here" in through_router(router, project["urls"][0]).text


def test_deploy_honours_ignore_files(deployer: CliShell, router: httpx.Client, tmp_path: Path) -> None:
    folder = site(tmp_path / "ignoring", "files")
    files = {"secret.txt": "no", "app.log": "no", "keep.log": "yes", "node_modules/x.js": "no", "sub/local.txt": "no",
             "sub/other.txt": "yes", "build/out.txt": "no"}
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)
    (folder / ".gitignore").write_text("secret.txt\n*.log\nbuild/\n")
    (folder / ".runixignore").write_text("!keep.log\n")
    (folder / "sub" / ".gitignore").write_text("local.txt\n")
    url = deployer.run("deploy", str(folder), "--yes").stdout.strip()
    for name, text in files.items():
        response = through_router(router, url, f"/{name}")
        assert (response.status_code == 200) == (text == "yes"), (name, response.status_code)


def test_deploy_asks_before_creating_a_project(deployer: CliShell, tmp_path: Path) -> None:
    folder = site(tmp_path / "never-made", "x")
    refused = deployer.run("deploy", str(folder), expect=1)
    assert "Refusing to create project never-made" in refused.stderr and "--yes" in refused.stderr
    assert "never-made" not in {p["name"] for p in deployer.json("projects", "ls")}
    assert not (folder / ".runix").exists()
    # `python -m runix.cli.main`, the same app, gives the same answer.
    via_module = deployer.run("deploy", str(folder), executable=[sys.executable, "-m", "runix.cli.main"], expect=1)
    assert via_module.stderr == refused.stderr
