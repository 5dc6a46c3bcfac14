"""Every HTTP error as an RFC 9457 problem response, mapped here and nowhere else.

Members: `type` (a URI naming the kind), `title`, `status`, and `detail` — a sentence, or
for 422 the list of `{loc, msg, type}` naming each bad field (the shape FastAPI uses, so
clients that read `detail[i].loc` keep working).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from shared.errors import Conflict, DomainError, Forbidden, Invalid, NotFound

PROBLEM_JSON = "application/problem+json"
PROBLEM_BASE = "https://branchline.dev/problems/"

_KINDS = {
    400: "bad-request",
    401: "unauthorized",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    409: "conflict",
    413: "too-large",
    415: "unsupported-media-type",
    422: "invalid",
    503: "unavailable",
}


def problem(status: int, detail: Any, headers: dict[str, str] | None = None) -> JSONResponse:
    kind = _KINDS.get(status, "error")
    body = {
        "type": PROBLEM_BASE + kind,
        "title": HTTPStatus(status).phrase,
        "status": status,
        "detail": jsonable_encoder(detail),
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM_JSON, headers=headers)


def invalid_fields(errors: list[tuple[str, str]], kind: str = "invalid",
                   location: str = "body") -> list[dict[str, Any]]:
    """(dotted field, message) pairs as FastAPI-style `{loc, msg, type}` entries."""
    return [
        {"loc": [location, *(int(p) if p.isdigit() else p for p in field.split(".") if p)],
         "msg": msg, "type": kind}
        for field, msg in errors
    ]


def install(app: FastAPI) -> None:
    """Register the handlers that turn domain errors and HTTP errors into problems."""

    @app.exception_handler(NotFound)
    async def _not_found(_: Request, exc: NotFound) -> JSONResponse:
        return problem(404, exc.message)

    @app.exception_handler(Forbidden)
    async def _forbidden(_: Request, exc: Forbidden) -> JSONResponse:
        return problem(403, exc.message)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        return problem(409, exc.message)

    @app.exception_handler(Invalid)
    async def _invalid(_: Request, exc: Invalid) -> JSONResponse:
        return problem(422, invalid_fields(exc.errors, exc.kind, exc.location))

    @app.exception_handler(DomainError)
    async def _refused(_: Request, exc: DomainError) -> JSONResponse:
        return problem(400, exc.message)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return problem(exc.status_code, exc.detail, dict(exc.headers or {}) or None)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return problem(422, exc.errors())
