"""A Bot API request as Telegram reads it: parameters from the query, a form, multipart or JSON, and
its error replies (HTTP status = error_code, as Telegram does)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from aiohttp import BodyPartReader, web

from bot.lab.telegram_standin.model import Button

MAX_CALLBACK_DATA = 64  # bytes
MAX_UPLOAD = 50 * 1024 * 1024


@dataclass(frozen=True)
class Upload:
    name: str
    data: bytes
    mime: str


@dataclass(eq=False)  # eq=False: an exception stays hashable
class ApiError(Exception):
    """An error reply: HTTP status = error_code, as Telegram does."""

    code: int
    description: str
    parameters: dict[str, Any] | None = None


def bad_request(what: str) -> ApiError:
    return ApiError(400, f"Bad Request: {what}")


@dataclass(frozen=True)
class Params:
    """A request's parameters: form fields are strings (JSON-encoded where not plain text), as PTB sends them."""

    values: dict[str, Any]

    def shown(self) -> dict[str, Any]:
        return {k: f"<file {v.name}, {len(v.data)} B>" if isinstance(v, Upload) else v
                for k, v in self.values.items()}

    def text(self, key: str) -> str | None:
        value = self.values.get(key)
        return None if value is None or isinstance(value, Upload) else str(value)

    # PTB sends well-formed numbers: a malformed one would be a stand-in bug (500), not a case to model.
    def integer(self, key: str) -> int | None:
        value = self.values.get(key)
        return None if value is None or value == "" else int(value)

    def number(self, key: str) -> float | None:
        value = self.values.get(key)
        return None if value is None or value == "" else float(value)

    def flag(self, key: str) -> bool:
        value = self.values.get(key)
        return value is True or str(value).lower() in ("true", "1")

    def decoded(self, key: str, error: str) -> Any:
        value = self.values.get(key)
        if not isinstance(value, str):
            return value  # absent, or already decoded from a JSON body
        if not value:
            return None
        try:
            return json.loads(value)
        except ValueError:
            raise bad_request(error) from None

    def upload(self, key: str) -> Upload | None:
        value = self.values.get(key)
        if isinstance(value, str) and value.startswith("attach://"):
            value = self.values.get(value.removeprefix("attach://"))
        return value if isinstance(value, Upload) else None


async def read_params(request: web.Request) -> Params:
    """Query string plus a urlencoded, multipart or JSON body: Telegram accepts them all."""
    values: dict[str, Any] = dict(request.query)
    if not request.body_exists:
        return Params(values)
    if request.content_type == "application/json":
        values.update(await request.json())  # well-formed: only the tests send JSON, to check the wire format
    elif request.content_type == "multipart/form-data":
        values.update(await _read_multipart(request))
    else:
        values.update(await request.post())
    return Params(values)


async def _read_multipart(request: web.Request) -> dict[str, Any]:
    # Read parts into memory ourselves: request.post() spools files to disk, which is blocking I/O.
    values: dict[str, Any] = {}
    total = 0
    reader = await request.multipart()
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader) or part.name is None:
            continue
        data = bytes(await part.read(decode=True))
        total += len(data)
        if total > MAX_UPLOAD:
            raise ApiError(413, "Request Entity Too Large")
        if part.filename is not None:
            mime = part.headers.get("Content-Type", "application/octet-stream")
            values[part.name] = Upload(part.filename, data, mime)
        else:
            values[part.name] = data.decode(part.get_charset("utf-8"), errors="replace")
    return values


def button(raw: Any) -> Button:
    if not isinstance(raw, dict) or not str(raw.get("text") or "").strip():
        raise bad_request("can't parse inline keyboard button: Text must be non-empty")
    if "callback_data" in raw:
        data = str(raw["callback_data"])
        if not 1 <= len(data.encode()) <= MAX_CALLBACK_DATA:
            raise bad_request("BUTTON_DATA_INVALID")
        return Button(raw["text"], data)
    raise bad_request("can't parse inline keyboard button: Text buttons are unallowed in the inline keyboard")


def reply_error(e: ApiError) -> web.Response:
    body: dict[str, Any] = {"ok": False, "error_code": e.code, "description": e.description}
    if e.parameters:
        body["parameters"] = e.parameters
    return web.json_response(body, status=e.code)


async def not_found(_: web.Request) -> web.Response:
    return reply_error(ApiError(404, "Not Found"))
