"""What every dashboard request passes before a page sees it, and the checks on what it carries.

- :class:`Guard` (pure ASGI, so streamed responses pass through) refuses, in this order: a
  ``Host`` that is not an address of this dashboard (DNS rebinding: a page on another site
  whose name resolves to 127.0.0.1 must not read it), a request without the token when one is
  set, and a state-changing request (any method but GET, HEAD, OPTIONS) from another site
  (cross-site request forgery): it needs an ``Origin`` (or, without one, a ``Referer``) of this
  dashboard, as browsers send, or the token in an ``Authorization`` header.
- :func:`number` and :func:`when` read query parameters; an integer must fit SQLite's 64 bits.
- :func:`confined` is the only way a request reaches a file.
- :class:`HideTokens` keeps ``token=`` values out of the server's log lines.
"""

from __future__ import annotations

import datetime as dt
import hmac
import ipaddress
import logging
import math
import re
from pathlib import Path
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import PlainTextResponse

from avar.serve.dashboard.reader import MAX_ID

log = logging.getLogger(__name__)

TOKEN_COOKIE = "avar_token"
LOCAL_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
WILDCARD_HOSTS = frozenset({"0.0.0.0", "::", ""})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class BadRequest(ValueError):
    pass


def number(request: Request, name: str, kind=float, low: float | None = None, high: float | None = None):
    """Query parameter ``name`` as a ``kind`` (int or float) in ``[low, high]`` (an int: at most
    ``MAX_ID`` anyway), or None when absent; else :class:`BadRequest` saying what is expected."""
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    if kind is int:
        high = MAX_ID if high is None else min(high, MAX_ID)
    bounds = " and ".join(f"{word} {limit:g}" for word, limit in (("at least", low), ("at most", high))
                          if limit is not None)
    expected = f"{'a whole' if kind is int else 'a finite'} number{', ' + bounds if bounds else ''}"
    try:
        value = kind(raw)
    except ValueError:
        raise BadRequest(f"{name}={raw[:40]!r} is not {expected}") from None
    if not math.isfinite(value) or low is not None and value < low or high is not None and value > high:
        raise BadRequest(f"{name}={raw[:40]!r} is not {expected}")
    return value


def when(request: Request, name: str) -> float | None:
    """Query parameter ``name`` as Unix seconds (an ISO date and time, UTC unless it says), or None."""
    raw = request.query_params.get(name, "").strip()
    if not raw:
        return None
    try:
        moment = dt.datetime.fromisoformat(raw)
        return (moment if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)).timestamp()
    except (ValueError, OverflowError):
        raise BadRequest(f"{name}={raw[:40]!r} is not a date and time (YYYY-MM-DDTHH:MM, UTC)") from None


def confined(name: str | None, roots: list[Path], extensions=None) -> Path | None:
    """The file ``name`` (absolute, or relative to the working folder or to one of ``roots``)
    if it resolves, symlinks followed, to a regular file inside one of ``roots`` (with one of
    ``extensions``) that has a single hard link; else None. A second hard link could be a way
    out of the folder that no path shows, so such a file is refused (and logged)."""
    if not name:
        return None
    path = Path(name)
    for candidate in [path] if path.is_absolute() else [path, *(root / path for root in roots)]:
        try:
            real = candidate.resolve(strict=True)
            info = real.stat()
        except (OSError, RuntimeError, ValueError):  # ValueError: a NUL in the name
            continue
        if real.is_file() and any(real.is_relative_to(root) for root in roots) and \
                (extensions is None or real.suffix.lower() in extensions):
            if info.st_nlink > 1:
                log.warning("%s: not served: it has %d hard links, and one may lie outside the served folders; "
                            "copy the file instead of linking it", real, info.st_nlink)
                return None
            return real
    return None


def allowed_hostnames(host: str, extra: list[str]) -> frozenset[str]:
    """The ``Host`` names a dashboard bound to ``host`` answers: localhost, the address itself
    and the names given with ``--allowed-host`` (lower case, without brackets or port)."""
    return frozenset({*LOCAL_HOSTS, host.strip("[]").lower(), *(h.strip().strip("[]").lower() for h in extra)})


def _hostname(netloc: str) -> str | None:
    """The host of a ``Host`` header or an origin's netloc, lower case, without port or brackets."""
    try:
        return urlsplit(f"//{netloc}").hostname
    except ValueError:
        return None


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _refuse(status: int, message: str) -> PlainTextResponse:
    return PlainTextResponse(f"avar serve: {message}", status_code=status)


class Guard:
    """The checks of this module's docstring in front of ``app``. A dashboard bound to every
    address (``0.0.0.0``) also answers any IP address in ``Host`` (a rebinding attack needs a
    name, not an address)."""

    def __init__(self, app, host: str, allowed_hosts: list[str], token: str | None):
        self.app, self.token = app, token
        self.hostnames = allowed_hostnames(host, allowed_hosts)
        self.any_ip = host in WILDCARD_HOSTS

    def host_allowed(self, header: str) -> bool:
        name = _hostname(header)
        return name is not None and (name in self.hostnames or self.any_ip and _is_ip(name))

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request = Request(scope)
        host = request.headers.get("host", "")
        if not self.host_allowed(host):
            return await _refuse(400, f"Host {host[:80]!r} is not an address of this dashboard; open it by the "
                                      "address it listens on, or start avar serve with --allowed-host NAME for a "
                                      "name that should reach it")(scope, receive, send)
        header = request.headers.get("authorization", "")
        bearer = header[7:] if header.lower().startswith("bearer ") else None
        query = request.query_params.get("token")
        if self.token is not None:
            given = query or bearer or request.cookies.get(TOKEN_COOKIE)
            if not given or not hmac.compare_digest(given.encode(), self.token.encode()):
                return await _refuse(401, "this dashboard needs its token. Open it as http://HOST:PORT/?token=TOKEN "
                                          "(the token given to avar serve with --token or AVAR_TOKEN)."
                                     )(scope, receive, send)
        if scope["method"] not in SAFE_METHODS and not (self.token is not None and bearer):
            origin = request.headers.get("origin") or request.headers.get("referer")
            if origin is None or origin == "null" or _origin_host(origin) != host.lower():
                return await _refuse(403, "a request that changes something must come from this dashboard's own "
                                          "pages (its Origin header naming this dashboard) or carry the token in "
                                          "an Authorization header; a request from another site is refused"
                                     )(scope, receive, send)
        if self.token is None or query is None:
            return await self.app(scope, receive, send)

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                cookie = f"{TOKEN_COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict"
                message = {**message, "headers": [*message.get("headers", []), (b"set-cookie", cookie.encode())]}
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def _origin_host(origin: str) -> str | None:
    """The ``host[:port]`` of an ``Origin`` or ``Referer`` header, lower case."""
    try:
        return urlsplit(origin).netloc.lower() or None
    except ValueError:
        return None


_TOKEN_VALUE = re.compile(r"((?:^|[?&;])token=)[^&;\s\"']*", re.IGNORECASE)


class HideTokens(logging.Filter):
    """Replaces every ``token=VALUE`` in a log line by ``token=[hidden]`` (uvicorn's access log
    writes each request's query string)."""

    def filter(self, record: logging.LogRecord) -> bool:
        # The arguments keep their shape: uvicorn's access formatter unpacks them.
        if isinstance(record.msg, str):
            record.msg = hide_token_values(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(hide_token_values(a) if isinstance(a, str) else a for a in record.args)
        return True


def hide_token_values(text: str) -> str:
    return _TOKEN_VALUE.sub(r"\1[hidden]", text) if "token=" in text.lower() else text


def hide_tokens(*loggers: str) -> None:
    """Add :class:`HideTokens` to each named logger (once)."""
    for name in loggers:
        logger = logging.getLogger(name)
        if not any(isinstance(f, HideTokens) for f in logger.filters):
            logger.addFilter(HideTokens())
