"""The first path a user takes: sign in by mailed code, create a project, read it back."""

from tests.support import RunixServer


def test_sign_in_and_create_project(server: RunixServer) -> None:
    alice = server.sign_in()
    r = alice.client.post("/projects", json={"name": "hello"})
    assert r.status_code == 201, r.text
    assert r.json()["name"] == "hello"
    r = alice.client.get("/projects/hello")
    assert r.status_code == 200
    assert r.json()["urls"][0].startswith("http://hello")
    assert r.headers["X-RateLimit-Limit"] == "100000"
