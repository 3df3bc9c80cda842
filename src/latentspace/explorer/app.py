"""The explorer's web application (Starlette): the page, its static files and a small JSON API.

    GET  /                       the page (static/index.html)
    GET  /static/NAME            explorer.js, explorer.css: only the files of static/, by name
    GET  /api/info               shapes, names, slider ranges, what a click on the map does
    GET  /api/map                x, y and label per point
    GET  /api/image/INDEX        held-out image INDEX as PNG (hover)
    GET  /api/item/INDEX         its code, label and image
    POST /api/point              {"x", "y"}: the code of a map point, decoded
    POST /api/decode             {"code"}: a code decoded
    POST /api/traverse           {"code", "dim", "steps"}: one dimension swept over its range
    POST /api/interpolate        {"a", "b", "steps"}: lerp and slerp strips
    POST /api/arithmetic         {"a", "b", "c"}: a - b + c, decoded

An item (`a`, `b`, `c`) is a held-out image's index or a code (a list of latent_dim numbers).
Decoded images come back as PNG data URIs. Every refused request is a 4xx with
{"error": "one line"}; nothing a request sends can reach a file outside static/ (files are
looked up by exact name in a table made at start) and the server keeps serving.
"""

from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from starlette.applications import Starlette
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from latentspace.errors import LatentspaceError
from latentspace.explorer.session import Explorer

__all__ = ["MAX_STEPS", "STATIC", "create_app"]

STATIC = Path(__file__).parent / "static"
MAX_STEPS = 64  # images in a traversal or interpolation strip
_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_HEADERS = {
    # the page may load nothing from elsewhere: scripts, styles and images come from this server
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; object-src 'none'",
    "X-Content-Type-Options": "nosniff",
}
_INDEX = re.compile(r"[0-9]{1,30}")


class BadRequest(Exception):
    """A request the API refuses: its status (4xx) and a one-line message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _data_uri(image: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(image).decode("ascii")


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not a number JSON allows")


# ---- reading requests ---------------------------------------------------------------------------
class _Reader:
    """Validates what requests send against one explorer's sizes."""

    def __init__(self, explorer: Explorer) -> None:
        self.explorer = explorer
        # three codes written out in full, with room to spare; anything larger is refused unread
        self.max_body = 65536 + 3 * 32 * explorer.latent_dim

    async def body(self, request: Request) -> dict[str, Any]:
        length = request.headers.get("content-length")
        if length is not None and not length.isdigit():
            raise BadRequest(400, f"Content-Length {length[:40]!r} is not a whole number")
        if length is not None and int(length) > self.max_body:
            raise BadRequest(413, f"the body is {length} bytes; the limit is {self.max_body}")
        data = bytearray()
        async for chunk in request.stream():
            data += chunk
            if len(data) > self.max_body:
                raise BadRequest(413, f"the body is over the limit of {self.max_body} bytes")
        try:
            document = json.loads(bytes(data), parse_constant=_reject_constant)
        except (ValueError, RecursionError) as error:
            raise BadRequest(400, f"the body is not valid JSON ({str(error)[:80]})") from None
        if not isinstance(document, dict):
            raise BadRequest(400, "the body must be a JSON object")
        return document

    def number(self, document: dict[str, Any], name: str) -> float:
        value = document.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadRequest(400, f"{name!r} must be a number, got {_shown(value)}")
        try:
            number = float(value)
        except OverflowError:
            number = math.inf
        if not math.isfinite(number):
            raise BadRequest(400, f"{name!r} must be a finite number")
        return number

    def whole(self, document: dict[str, Any], name: str, low: int, high: int, default: int) -> int:
        value = document.get(name, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise BadRequest(400, f"{name!r} must be a whole number from {low} to {high}")
        return value

    def index(self, text: str) -> int:
        n = len(self.explorer)
        if not _INDEX.fullmatch(text):
            raise BadRequest(
                400, f"image index {text[:40]!r} is not a whole number from 0 to {n - 1}"
            )
        index = int(text)
        if index >= n:
            raise BadRequest(404, f"image index {index} is out of range: 0 to {n - 1}")
        return index

    def code(self, value: Any, name: str) -> torch.Tensor:
        """A code (D,) from a list of D finite numbers, or the code of the item an index names."""
        explorer, d = self.explorer, self.explorer.latent_dim
        if isinstance(value, int) and not isinstance(value, bool):
            return explorer.codes[self.index(str(value))]
        if not isinstance(value, list) or len(value) != d:
            size = f"a list of {len(value)}" if isinstance(value, list) else _shown(value)
            raise BadRequest(
                400, f"{name!r} must be a code of {d} numbers or an image index, got {size}"
            )
        if any(isinstance(v, bool) or not isinstance(v, int | float) for v in value):
            raise BadRequest(400, f"{name!r} holds something that is not a number")
        try:
            code = torch.tensor(value, dtype=torch.float32)
        except (OverflowError, RuntimeError):
            raise BadRequest(400, f"{name!r} holds a number too large for a code") from None
        if not bool(torch.isfinite(code).all()):
            raise BadRequest(400, f"{name!r} holds a number too large for a code")
        return code


def _shown(value: Any) -> str:
    text = json.dumps(value) if not isinstance(value, bytes) else repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


# ---- the application ----------------------------------------------------------------------------
def create_app(explorer: Explorer, allowed_hosts: list[str] | None = None) -> Starlette:
    """The application serving `explorer`. With `allowed_hosts` (["127.0.0.1", "localhost"])
    a request naming another host is refused (400, JSON), which keeps a web page from reaching
    the explorer through a DNS name rebound to 127.0.0.1; None accepts any."""
    reader = _Reader(explorer)
    static = {p.name: p.read_bytes() for p in sorted(STATIC.iterdir()) if p.suffix in _TYPES}

    def file_response(name: str) -> Response:
        content = static.get(name)
        if content is None:
            raise BadRequest(404, f"no static file {name[:60]!r}")
        return Response(content, media_type=_TYPES[Path(name).suffix], headers=_HEADERS)

    def decoded(code: torch.Tensor) -> dict[str, Any]:
        (image,) = explorer.decode(code[None])
        return {"code": [round(v, 6) for v in code.tolist()], "image": _data_uri(image)}

    async def index_page(request: Request) -> Response:
        return file_response("index.html")

    async def static_file(request: Request) -> Response:
        return file_response(request.path_params["name"])

    async def info(request: Request) -> Response:
        return JSONResponse(explorer.describe())

    async def map_points(request: Request) -> Response:
        return JSONResponse(explorer.map_data())

    async def image(request: Request) -> Response:
        index = reader.index(request.path_params["index"])
        headers = {"Cache-Control": "max-age=3600", **_HEADERS}
        return Response(explorer.thumbnail(index), media_type="image/png", headers=headers)

    async def item(request: Request) -> Response:
        index = reader.index(request.path_params["index"])
        thumbnail = _data_uri(explorer.thumbnail(index))
        return JSONResponse(
            {"index": index, "label": explorer.label(index), "original": thumbnail}
            | decoded(explorer.codes[index])
        )

    async def point(request: Request) -> Response:
        document = await reader.body(request)
        x, y = reader.number(document, "x"), reader.number(document, "y")
        return JSONResponse(decoded(explorer.code_at(x, y)))

    async def decode(request: Request) -> Response:
        document = await reader.body(request)
        return JSONResponse(decoded(reader.code(document.get("code"), "code")))

    async def traverse(request: Request) -> Response:
        document = await reader.body(request)
        code = reader.code(document.get("code"), "code")
        dim = reader.whole(document, "dim", 0, explorer.latent_dim - 1, 0)
        steps = reader.whole(document, "steps", 2, MAX_STEPS, 9)
        values, images = explorer.traverse(code, dim, steps)
        return JSONResponse(
            {"dim": dim, "values": values, "images": [_data_uri(i) for i in images]}
        )

    async def interpolate(request: Request) -> Response:
        document = await reader.body(request)
        a, b = reader.code(document.get("a"), "a"), reader.code(document.get("b"), "b")
        steps = reader.whole(document, "steps", 2, MAX_STEPS, 10)
        strips = explorer.interpolate(a, b, steps)
        return JSONResponse({mode: [_data_uri(i) for i in row] for mode, row in strips.items()})

    async def arithmetic(request: Request) -> Response:
        document = await reader.body(request)
        a, b, c = (reader.code(document.get(k), k) for k in "abc")
        result = a - b + c
        if not bool(torch.isfinite(result).all()):
            raise BadRequest(400, "a - b + c is too large for a code")
        return JSONResponse(decoded(result))

    routes = [
        Route("/", index_page),
        Route("/static/{name:path}", static_file),
        Route("/api/info", info),
        Route("/api/map", map_points),
        Route("/api/image/{index}", image),
        Route("/api/item/{index}", item),
        Route("/api/point", point, methods=["POST"]),
        Route("/api/decode", decode, methods=["POST"]),
        Route("/api/traverse", traverse, methods=["POST"]),
        Route("/api/interpolate", interpolate, methods=["POST"]),
        Route("/api/arithmetic", arithmetic, methods=["POST"]),
    ]
    middleware = []
    if allowed_hosts is not None:
        middleware.append(Middleware(_OnlyHosts, hosts=allowed_hosts))
    return Starlette(
        routes=routes,
        middleware=middleware,
        exception_handlers={
            BadRequest: _refused,
            HTTPException: _http_error,
            LatentspaceError: _refused_by_model,
        },
    )


class _OnlyHosts:
    """Refuse (400, JSON) a request whose Host header names none of `hosts`."""

    def __init__(self, app: ASGIApp, hosts: list[str]) -> None:
        self.app = app
        self.hosts = set(hosts)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            host = Headers(scope=scope).get("host", "")
            name = host[: host.find("]") + 1] if host.startswith("[") else host.split(":")[0]
            if name not in self.hosts:
                said = ", ".join(sorted(self.hosts))
                message = f"host {host[:60]!r} is not this explorer's: it answers to {said}"
                await _error(400, message)(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


async def _refused(request: Request, error: Exception) -> Response:
    if not isinstance(error, BadRequest):  # pragma: no cover - registered for BadRequest only
        raise error
    return _error(error.status, error.message)


async def _http_error(request: Request, error: Exception) -> Response:
    """Routing's own refusals (no such path, wrong method) as JSON too."""
    if not isinstance(error, HTTPException):  # pragma: no cover - registered for it only
        raise error
    message = {
        404: f"no such page: {request.url.path[:80]}",
        405: f"{request.method} is not allowed on {request.url.path[:80]}",
    }.get(error.status_code, str(error.detail))
    return _error(error.status_code, message, error.headers)


async def _refused_by_model(request: Request, error: Exception) -> Response:
    """A shape or value the model itself refuses (one line)."""
    return _error(400, str(error))
