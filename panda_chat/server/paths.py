"""URL path segments that hold any user id, "/" and "%" included.

A user id may contain "/" (``profiles.ids`` allows "team/alice", and a chat request creates such a user), so a client
names it in a URL as one escaped segment: ``/v1/profiles/team%2Falice``. Uvicorn decodes the path before Starlette
routes on it, which splits that id in two: the profile endpoints answered 404 for a user the server had just created,
who could then never be shown, exported or forgotten over HTTP. ``KeepEscapedSlashes`` routes on the path as sent
instead (each segment decoded on its own, its "%" and "/" kept escaped), and the ``segment`` convertor of a route
parameter (``{user:segment}``) decodes it once, so the handler sees the id itself.
"""

from __future__ import annotations

from urllib.parse import quote, unquote

from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Receive, Scope, Send


def _escaped(segment: str) -> str:
    return segment.replace("%", "%25").replace("/", "%2F")


class KeepEscapedSlashes:
    """ASGI middleware: the path Starlette routes on keeps each segment's escaped "/" and "%"."""

    def __init__(self, app: ASGIApp):
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if raw and b"%" in raw:
            segments = raw.decode("latin-1").split("/")
            scope = {**scope, "path": "/".join(_escaped(unquote(segment)) for segment in segments)}
        await self.app(scope, receive, send)


class SegmentConvertor(Convertor[str]):
    """One path segment, decoded (after ``KeepEscapedSlashes``, only its "%25" and "%2F" are still escaped)."""

    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return unquote(value)

    def to_string(self, value: str) -> str:
        return quote(value, safe="")


register_url_convertor("segment", SegmentConvertor())
