"""Attack 5, disk: a build that writes without end, an account that keeps deploying, caches that grow forever and
outlive their projects. Each is bounded by the account's quotas (made small here with RUNIX_DISK_QUOTA_MB and
RUNIX_BUILD_CACHE_QUOTA_MB), with a clear 4xx or a failed build saying why, while other apps keep serving."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.api_support import error
from tests.support import Account, RunixServer, running_server
from tests.test_deployments_e2e import Router, deploy, new_project, stdlib_app, tarball, upload, wait_settled

DISK_MB = 24
CACHE_MB = 6


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunixServer]:
    with running_server(tmp_path_factory.mktemp("disk"), RUNIX_RATE_LIMIT_PER_MINUTE="100000",
                        RUNIX_DISK_QUOTA_MB=str(DISK_MB), RUNIX_BUILD_CACHE_QUOTA_MB=str(CACHE_MB),
                        RUNIX_HEALTH_TIMEOUT="20") as s:
        yield s


def writes(megabytes: int, where: str = "blob.bin") -> str:
    """A build command writing `megabytes` of data that takes real disk blocks."""
    return f"head -c {megabytes}M /dev/urandom > {where}"


def usage(account: Account) -> dict[str, int]:
    return account.client.get("/billing").json()["usage"]


def test_a_build_writing_without_end_is_stopped_and_nothing_it_wrote_stays(server: RunixServer) -> None:
    victim = server.sign_in()  # another tenant, serving all along
    new_project(victim, "steady")
    assert deploy(victim, "steady", stdlib_app("v1"))["status"] == "READY"
    router = Router(server)

    filler = server.sign_in()
    new_project(filler, "filler", build_command="while true; do head -c 4M /dev/urandom >> grow.bin; done")
    settled = wait_settled(filler, upload(filler, "filler", stdlib_app("f")).json()["id"])
    assert settled["status"] == "ERROR"
    assert "disk quota" in settled["error"] and "runix deployments rm" in settled["error"], settled["error"]
    assert not (server.data_dir / "releases" / settled["id"]).exists()
    assert usage(filler)["disk_mb"] <= 1  # only the upload
    assert router.get("steady.localhost").text == "v1 -"


def test_deploys_stop_at_the_disk_quota_with_quota_exceeded_and_deleting_frees_room(server: RunixServer) -> None:
    hoarder = server.sign_in()
    new_project(hoarder, "hoard", build_command=writes(9))
    kept = [deploy(hoarder, "hoard", stdlib_app(f"v{i}"), target="preview") for i in range(2)]
    assert all(d["status"] == "READY" for d in kept)
    assert 18 <= usage(hoarder)["disk_mb"] <= DISK_MB
    third = wait_settled(hoarder, upload(hoarder, "hoard", stdlib_app("v3"), target="preview").json()["id"])
    assert third["status"] == "ERROR" and "disk quota" in third["error"]  # its release would not fit
    billing = hoarder.client.get("/billing").json()
    assert billing["limits"]["disk_mb"] == DISK_MB

    new_project(hoarder, "pile")
    body = error(upload(hoarder, "pile", tarball({"big.bin": os.urandom(7 * 1024 * 1024)})), 403, "QUOTA_EXCEEDED")
    assert f"{DISK_MB} MB" in body["error"] and "runix deployments rm" in body["error"]

    assert hoarder.client.delete(f"/deployments/{kept[0]['id']}").status_code == 200
    assert usage(hoarder)["disk_mb"] <= 12
    assert deploy(hoarder, "hoard", stdlib_app("v4"), target="preview")["status"] == "READY"


def python_app(tag: str) -> bytes:
    """An app with Python dependencies (none listed), so its build gets a download cache (UV_CACHE_DIR)."""
    return stdlib_app(tag, **{"requirements.txt": ""})


def caches(server: RunixServer, project_id: str) -> list[Path]:
    return [p for p in (server.data_dir / "cache").glob(f"*/*/{project_id}") if p.is_dir()]


def test_build_caches_keep_to_their_quota_least_recently_used_first_and_go_with_their_project(
        server: RunixServer) -> None:
    builder = server.sign_in()
    ids = {}
    for name in ("older", "newer"):  # each build puts 4 MB in its project's cache: both do not fit 6 MB
        new_project(builder, name, build_command=writes(4, "$UV_CACHE_DIR/blob.bin"))
        ids[name] = builder.client.get(f"/projects/{name}").json()["id"]
        assert deploy(builder, name, python_app(name))["status"] == "READY"
    assert caches(server, ids["newer"]) and not caches(server, ids["older"])  # the least recently used went
    assert 4 <= usage(builder)["build_cache_mb"] <= CACHE_MB

    other = server.sign_in()  # another account's cache is its own, and not evicted for this one
    new_project(other, "theirs", build_command=writes(1, "$UV_CACHE_DIR/blob.bin"))
    theirs = other.client.get("/projects/theirs").json()["id"]
    assert deploy(other, "theirs", python_app("theirs"))["status"] == "READY"
    assert caches(server, theirs) and caches(server, ids["newer"])

    assert builder.client.delete("/projects/newer").status_code == 200
    assert not caches(server, ids["newer"])  # gone with its project
    assert caches(server, theirs)
