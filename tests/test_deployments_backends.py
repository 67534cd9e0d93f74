"""Deployments on the production backends: PostgreSQL for the database and Redis for live events (and deploy limits).
Skipped locally when a service is missing; under CI=true a missing service fails."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from tests.support import drop_postgres_database, fresh_postgres_database, require_redis, running_server
from tests.test_deployments_e2e import Router, deploy, host_of, new_project, stdlib_app, upload


def test_deploy_follow_and_rollback_on_postgres_and_redis(tmp_path: Path) -> None:
    redis_url = require_redis()
    database_url = fresh_postgres_database()
    try:
        with running_server(tmp_path, RUNIX_DATABASE_URL=database_url, RUNIX_REDIS_URL=redis_url) as server:
            user = server.sign_in()
            router = Router(server)
            new_project(user, "pg")
            v1 = deploy(user, "pg", stdlib_app("v1"))
            assert v1["status"] == "READY", v1

            deployment_id = upload(user, "pg", stdlib_app("v2")).json()["id"]
            lines: list[str] = []
            end: dict = {}

            def follow() -> None:
                with user.client.stream("GET", f"/deployments/{deployment_id}/events?follow=true") as r:
                    for line in r.iter_lines():
                        if line.startswith("data: "):
                            data = json.loads(line[6:])
                            if "status" in data:
                                end.update(data)
                                return
                            lines.append(data["text"])

            follower = threading.Thread(target=follow)
            follower.start()
            follower.join(60)
            assert end == {"status": "READY"}, (end, lines)
            assert "starting v2" in lines  # a runtime line, published through Redis
            assert router.get("pg.localhost").text == "v2 -"

            assert user.client.post(f"/deployments/{v1['id']}/promote").status_code == 200
            assert router.get("pg.localhost").text == "v1 -"
            assert router.get(host_of(v1["url"])).text == "v1 -"
            listed = user.client.get("/deployments", params={"project": "pg", "status": "ready"}).json()
            assert [d["id"] for d in listed] == [deployment_id, v1["id"]]
    finally:
        drop_postgres_database(database_url)
