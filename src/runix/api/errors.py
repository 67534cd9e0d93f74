"""Every failure leaves the API as `{"error", "code"}` with one of the documented status codes."""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException

from runix.errors import RunixError
from runix.schemas import ErrorBody

log = structlog.get_logger("runix.api")

INTERNAL_ERROR_MESSAGE = "Something went wrong on our side. Try again in a moment."
_CODES = {400: "BAD_REQUEST", 401: "UNAUTHORIZED", 403: "FORBIDDEN", 404: "NOT_FOUND", 409: "CONFLICT",
          429: "RATE_LIMITED"}


def error_response(status: int, code: str, message: str, details=None, headers=None) -> JSONResponse:
    body = {"error": message, "code": code}
    if details is not None:
        body["details"] = details
    return JSONResponse(body, status_code=status, headers=headers)


def _field_errors(exc: RequestValidationError) -> list[dict]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        out.append({"field": ".".join(loc) or "body", "message": err.get("msg", "invalid")})
    return out


def install(app: FastAPI) -> None:
    @app.exception_handler(RunixError)
    async def runix_error(request: Request, exc: RunixError) -> JSONResponse:
        return error_response(exc.status, exc.code, exc.message, exc.details, exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = _field_errors(exc)
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return error_response(400, "BAD_REQUEST", "The request body is not valid JSON")
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details[:3])
        return error_response(400, "VALIDATION_ERROR", f"Invalid request: {summary}", details)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405):
            # An unknown method on a known path is, to the caller, an endpoint that does not exist.
            return error_response(404, "NOT_FOUND", f"No endpoint {request.method} {request.url.path}")
        status = exc.status_code if exc.status_code in _CODES else 400
        return error_response(status, _CODES[status], str(exc.detail), headers=getattr(exc, "headers", None))

    @app.exception_handler(DataError)
    async def unstorable_value(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value from the request (e.g. a NUL character in a path on PostgreSQL).
        return error_response(400, "BAD_REQUEST", "A value in the request is not valid (check for control characters)")

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error", path=request.url.path, method=request.method)
        return error_response(500, "INTERNAL_ERROR", INTERNAL_ERROR_MESSAGE)


_WORDS = {400: "Bad request", 401: "Missing or invalid token", 403: "Forbidden", 404: "Not found",
          409: "Conflict", 429: "Rate limited (see Retry-After)", 500: "Server error",
          503: "A service Runix depends on is unavailable (see Retry-After)"}


def responses(*statuses: int) -> dict[int | str, dict]:
    """OpenAPI documentation of the error responses an endpoint can give."""
    return {s: {"model": ErrorBody, "description": _WORDS[s]} for s in statuses}


def document_errors(schema: dict[str, Any]) -> None:
    """Completes an OpenAPI schema: no 422 anywhere (validation failures are 400), and on every operation the
    errors any endpoint of its kind can give, whether or not its route listed them: 500 always; 400 with
    parameters or a body; 401 and 429 with a token; 404 with an id in the path."""
    schemas = schema.setdefault("components", {}).setdefault("schemas", {})
    for name in ("HTTPValidationError", "ValidationError"):
        schemas.pop(name, None)
    schemas.setdefault("ErrorBody", ErrorBody.model_json_schema())
    error_body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    for path, item in schema.get("paths", {}).items():
        for op in item.values():
            documented = op.setdefault("responses", {})
            documented.pop("422", None)
            needed = {500}
            if op.get("parameters") or op.get("requestBody"):
                needed.add(400)
            if op.get("security"):
                needed |= {401, 429}
            if "{" in path:
                needed.add(404)
            for status in sorted(needed):
                documented.setdefault(str(status), {"description": _WORDS[status], "content": error_body})


AUTHED = responses(400, 401, 404, 429, 500)
