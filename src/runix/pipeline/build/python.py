"""Python apps: requirements.txt, pyproject.toml (with uv.lock: exactly what is locked), installed by uv into a
virtualenv inside the release."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from runix.pipeline.build.plan import LISTEN_HOST, BuildFailed, BuildPlan

ENTRY_MODULES = ("main", "app", "server", "wsgi", "asgi")
APP_ASSIGNMENT = re.compile(r"^(\w+)\s*=\s*(FastAPI|Starlette|Quart|Litestar|Flask|Django\w*)\(", re.MULTILINE)
ASGI_FRAMEWORKS = ("FastAPI", "Starlette", "Quart", "Litestar")


def applies(app_dir: Path) -> bool:
    return (app_dir / "requirements.txt").is_file() or (app_dir / "pyproject.toml").is_file()


def dependency_file(app_dir: Path) -> str:
    for name in ("requirements.txt", "uv.lock"):
        if (app_dir / name).is_file():
            return name
    return "pyproject.toml"


def install_command(app_dir: Path) -> str:
    # Only the dependencies: the app runs from its own folder, so the project itself needs no build.
    source = dependency_file(app_dir)
    if source == "uv.lock":
        return "uv sync --frozen --no-dev --no-install-project"
    return f"uv pip install -r {source}"


def requirement_names(app_dir: Path) -> set[str]:
    lines: list[str] = []
    requirements = app_dir / "requirements.txt"
    if requirements.is_file():
        lines = requirements.read_text(errors="replace").splitlines()
    elif (app_dir / "pyproject.toml").is_file():
        try:
            project = tomllib.loads((app_dir / "pyproject.toml").read_text(errors="replace")).get("project", {})
        except tomllib.TOMLDecodeError as exc:
            raise BuildFailed(f"pyproject.toml is not valid TOML: {exc}") from exc
        lines = [str(d) for d in project.get("dependencies", [])]
    names = set()
    for line in lines:
        name = re.split(r"[\s<>=!~;\[@#]", line.strip(), maxsplit=1)[0]
        if name and not name.startswith("-"):
            names.add(name.lower().replace("_", "-"))
    return names


def start_command(app_dir: Path) -> str | None:
    """How to start the app: manage.py, a module run as a script, or its app object under uvicorn/gunicorn."""
    names = requirement_names(app_dir)
    if (app_dir / "manage.py").is_file():
        return f'python manage.py runserver "{LISTEN_HOST}:$PORT" --noreload'
    for module in ENTRY_MODULES:
        source = app_dir / f"{module}.py"
        if not source.is_file():
            continue
        text = source.read_text(errors="replace")
        if "__main__" in text:
            return f"python {module}.py"
        match = APP_ASSIGNMENT.search(text)
        variable = match.group(1) if match else "app"
        asgi = match is not None and match.group(2) in ASGI_FRAMEWORKS
        if "uvicorn" in names and (asgi or "gunicorn" not in names):
            return f'uvicorn {module}:{variable} --host "{LISTEN_HOST}" --port "$PORT"'
        if "gunicorn" in names:
            return f'gunicorn --bind "{LISTEN_HOST}:$PORT" {module}:{variable}'
    return None


def plan(app_dir: Path) -> BuildPlan:
    has_dependencies = applies(app_dir)
    return BuildPlan(
        kind="python",
        install_command=install_command(app_dir) if has_dependencies else None,
        build_command=None,
        start_command=start_command(app_dir) or "",
        dependencies="python" if has_dependencies else None,
        reason=dependency_file(app_dir) if has_dependencies else "",
    )
