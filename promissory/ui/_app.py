"""The web view as a Starlette application: pages, actions, live events, and the guard.

Every request must carry the access token: in the URL (``?token=``; the answer then sets it as
a cookie, so links need not carry it), as that cookie, or as ``Authorization: token …``. Every
response forbids framing, sniffing and referrers to other sites, and its content security
policy runs no script but the view's own. Actions are POSTs whose form carries a CSRF value
derived from the token (and that the browser says came from this view's own pages), and each
settles, cancels or resumes through the same functions as the CLI
(``promissory.cli.actions``).

Example:
    >>> app = create_app(store, token="s3cret")  # doctest: +SKIP
    >>> uvicorn.run(app, host="127.0.0.1", port=8765, loop="uvloop")  # doctest: +SKIP

"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import threading
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlencode

import msgspec
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..cli import ACTOR_STATUSES, MAX_LIMIT, actions as _actions, load_actor
from ..errors import ActorNotFoundError, InvalidInputError, PromiseNotFoundError, PromissoryError
from ..store import PromiseState, Store, views as _queries
from . import _pages, _runpage, _static
from ._html import Markup, html, path_part
from ._layout import page
from ._live import LiveFeed
from ._runview import build

if TYPE_CHECKING:
    from ..runtime import Runtime

COOKIE = "promissory_token"
PARTIAL = "x-promissory-partial"
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        b"connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"same-origin"),
    (b"cache-control", b"no-store"),
]
LOOPBACK_NAMES = {"127.0.0.1", "localhost", "::1", "[::1]"}
RUN_LIMIT = 5000
"""The most promises a run page reads (its steps and its sub-runs' steps)."""


class View:
    """What the pages share: the store, the token, and (on demand) a runtime for resumes.

    Args:
        store: the store to read and act on.
        token: the access token; ``None`` lets every request in (loopback only).
        runtime: makes the runtime that hosts resumed runs, the first time one is resumed.

    """

    def __init__(
        self,
        store: Store,
        token: str | None,
        runtime: Callable[[], Runtime] | None = None,
    ) -> None:
        self.store = store
        self.token = token
        secret = (token or secrets.token_hex(16)).encode()
        self.csrf = hmac.new(secret, b"promissory-ui-csrf", hashlib.sha256).hexdigest()
        self._make_runtime = runtime
        self._runtime: Runtime | None = None
        self._lock = threading.Lock()
        self.feed = LiveFeed(store)

    def runtime(self) -> Runtime:
        """The runtime this view hosts resumed runs on, opened the first time it is needed."""
        with self._lock:
            if self._runtime is None:
                if self._make_runtime is None:
                    raise PromissoryError("this view cannot host runs (no runtime)")
                self._runtime = self._make_runtime()
            return self._runtime

    def close(self) -> None:
        """Close the runtime, if one was opened."""
        with self._lock:
            if self._runtime is not None:
                self._runtime.close()
                self._runtime = None


def create_app(
    store: Store,
    *,
    token: str | None,
    runtime: Callable[[], Runtime] | None = None,
    loopback_only: bool = True,
) -> Starlette:
    """The web view of ``store`` as an ASGI application.

    Args:
        store: the store to show (the caller closes it).
        token: the access token every request must carry; ``None`` for none (only for a
            server on a loopback address).
        runtime: makes a ``Runtime`` to host resumed runs (default: resuming is refused).
        loopback_only: refuse requests whose ``Host`` is not a loopback name (a defence against
            DNS rebinding; set when serving on a loopback address).

    Example:
        >>> app = create_app(store, token=secrets.token_urlsafe(24))  # doctest: +SKIP

    """
    view = View(store, token, runtime)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await view.feed.start()
        try:
            yield
        finally:
            await view.feed.close()
            await run_in_threadpool(view.close)

    routes = [
        Route("/", _page(view, _forest)),
        Route("/run/{id:path}", _page(view, _run)),
        Route("/promise/{id:path}", _page(view, _promise)),
        Route("/actor/{id:path}", _page(view, _actor)),
        Route("/approvals", _page(view, _approvals)),
        Route("/search", _page(view, _search)),
        Route("/confirm", _page(view, _confirm)),
        Route("/act/{action}", _action(view), methods=["POST"]),
        Route("/events", _events(view)),
        Route("/static/app.css", _asset(_static.CSS, "text/css")),
        Route("/static/app.js", _asset(_static.JS, "text/javascript")),
        Route("/favicon.ico", _asset("", "image/x-icon")),
    ]
    guard = Middleware(_Guard, token=token, loopback_only=loopback_only)
    app = Starlette(routes=routes, middleware=[guard], lifespan=lifespan)
    app.state.view = view
    return app


# -- pages -----------------------------------------------------------------------------------

Render = Callable[[View, Request], tuple[str, Markup, str]]
"""A page: its title, its ``<main>``, and the scope it follows live (an id prefix or ``*``)."""


def _page(view: View, render: Render) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        watch, status, since = "*", 200, ""
        try:
            since = await run_in_threadpool(_stamp, view, request)
            title, body, watch = await run_in_threadpool(render, view, request)
        except _NotFound as exc:
            title, status = "not found", 404
            body = _pages.error_page("Not found", str(exc))
        except (InvalidInputError, ValueError) as exc:
            title, status = "bad request", 400
            body = _pages.error_page("Bad request", str(exc))
        except PromissoryError as exc:
            title, status = "error", 503
            body = _pages.error_page("The store could not answer", str(exc))
        if request.headers.get(PARTIAL):
            return HTMLResponse(body, status)
        note = request.query_params.get("note")
        return HTMLResponse(page(title, body, watch=watch, note=note, since=since), status)

    return endpoint


def _stamp(view: View, request: Request) -> str:
    """The stamp of what the page at ``request`` follows, read before the page is."""
    path = request.url.path
    for prefix in ("/run/", "/promise/", "/actor/"):
        if path.startswith(prefix):
            return _queries.version(view.store, request.path_params.get("id", "") or "*")
    watch = request.query_params.get("prefix") if path == "/search" else None
    return _queries.version(view.store, watch or "*")


class _NotFound(Exception):
    pass


def _back(request: Request) -> str:
    """The page's URL, as an action's way back (without a note an earlier action left)."""
    query = [(k, v) for k, v in request.query_params.multi_items() if k not in ("note", "token")]
    return request.url.path + ("?" + urlencode(query) if query else "")


def _limit(request: Request, default: int) -> int:
    text = request.query_params.get("limit") or str(default)
    try:
        value = int(text)
    except ValueError:
        raise InvalidInputError(f"limit is not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_LIMIT:
        raise InvalidInputError(f"limit must be between 1 and {MAX_LIMIT}, not {value}")
    return value


def _forest(view: View, request: Request) -> tuple[str, Markup, str]:
    root = request.query_params.get("root") or None
    status = request.query_params.get("status") or None
    if status is not None and status not in ACTOR_STATUSES:
        raise InvalidInputError(f"no status {status!r}; the statuses: {', '.join(ACTOR_STATUSES)}")
    limit = _limit(request, 1000)
    rows, more = _queries.forest(view.store, root, status, limit)
    return "forest", _pages.forest_page(rows, more, root, status, limit), "*"


def _run(view: View, request: Request) -> tuple[str, Markup, str]:
    id = request.path_params["id"]
    promises, more = _queries.under(view.store, id, RUN_LIMIT)
    run = next((p for p in promises if p.id == id), None)
    if run is None:
        raise _NotFound(f"no run or promise has the id {id!r}")
    rest = [p for p in promises if p.id != id]
    awaited_ids = [
        (p.fingerprint or "").removeprefix("promise:")
        for p in rest
        if (p.fingerprint or "").startswith("promise:")
    ]
    awaited = view.store.get_many(awaited_ids) if awaited_ids else {}
    result = build(run, rest, _queries.now(view.store), awaited)
    actor = run.recipient if run.recipient else None
    body = _runpage.run_page(
        result, actor, view.csrf, _back(request), more, _runpage.resumable(run)
    )
    return f"run {id}", body, id


def _promise(view: View, request: Request) -> tuple[str, Markup, str]:
    id = request.path_params["id"]
    p = view.store.find(id)
    if p is None:
        raise _NotFound(f"no promise has the id {id!r}")
    extra = _queries.extras(view.store, [id]).get(id, _queries.Extra())
    kids = _queries.children(view.store, id)
    body = _runpage.promise_page(
        p,
        extra,
        kids,
        view.csrf,
        _back(request),
        _queries.now(view.store),
        _runpage.is_run_message(p),
    )
    return f"promise {id}", body, id


def _actor(view: View, request: Request) -> tuple[str, Markup, str]:
    id = request.path_params["id"]
    actor = load_actor(view.store, id)
    if actor is None:
        raise _NotFound(f"no actor has the id {id!r}")
    mailbox = _queries.mailbox(view.store, id)
    return f"actor {id}", _pages.actor_page(actor, mailbox, _back(request)), id


def _approvals(view: View, request: Request) -> tuple[str, Markup, str]:
    found = view.store.search(kind="promise", state="pending", limit=_limit(request, 200))
    extra = _queries.extras(view.store, [p.id for p in found.items])
    body = _pages.approvals_page(found.items, extra, view.csrf, _back(request))
    return "approvals", body, "*"


_AGE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_age(text: str) -> timedelta:
    """``15m``, ``2h``, ``7d``, ``90`` (seconds) as a duration.

    Example:
        >>> parse_age("2h")
        datetime.timedelta(seconds=7200)

    """
    match = _AGE.match(text)
    if match is None:
        raise InvalidInputError(f"age is a number and a unit (s, m, h, d, w), like 15m: {text!r}")
    return timedelta(seconds=float(match.group(1)) * _UNIT[match.group(2)])


def _search(view: View, request: Request) -> tuple[str, Markup, str]:
    q = {k: v for k, v in request.query_params.items() if k not in ("note", "token") and v}
    error = None
    found: list[Any] = []
    cursor = None
    if q:
        try:
            after = None
            if q.get("age"):
                after = datetime.now(UTC) - parse_age(q["age"])
            page_ = view.store.search(
                prefix=q.get("prefix"),
                state=q.get("state"),
                kind=q.get("kind"),
                created_after=after,
                limit=_limit(request, 100),
                cursor=q.get("cursor"),
            )
            found, cursor = page_.items, page_.cursor
        except InvalidInputError as exc:
            error = str(exc)
    q.pop("cursor", None)
    watch = q.get("prefix") or "*"
    return "search", _pages.search_page(found, cursor, q, error), watch


def _confirm(view: View, request: Request) -> tuple[str, Markup, str]:
    action = request.query_params.get("action", "")
    id = request.query_params.get("id", "")
    if action not in _pages.CONFIRM:
        raise InvalidInputError(f"no action {action!r}")
    back = _local(request.query_params.get("back"))
    found = view.store.find(id) is not None or load_actor(view.store, id) is not None
    return f"{action} {id}", _pages.confirm_page(action, id, view.csrf, back, found), "*"


# -- actions ---------------------------------------------------------------------------------


def _local(back: str | None) -> str:
    """A way back that stays on this server (a path), else the forest."""
    if not back or not back.startswith("/") or back.startswith("//") or "\\" in back:
        return "/"
    return back


def _with_note(back: str, note: str) -> str:
    return back + ("&" if "?" in back else "?") + urlencode({"note": note})


def _action(view: View) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        action = request.path_params["action"]
        body = await request.body()
        if len(body) > 1_000_000:
            return _refuse(413, "too large")
        form = {k: v[-1] for k, v in parse_qs(body.decode(errors="replace")).items()}
        if not _same_origin(request):
            return _refuse(403, "the request did not come from this view (its origin differs)")
        if not hmac.compare_digest(form.get("csrf", ""), view.csrf):
            return _refuse(403, "the form is not this view's (its CSRF value is missing or wrong)")
        back = _local(form.get("back"))
        id = form.get("id", "")
        try:
            note = await run_in_threadpool(_act, view, action, id, form)
        except (PromiseNotFoundError, ActorNotFoundError):
            note = f"nothing has the id {id!r}"
        except LookupError as exc:
            note = f"{exc} (start promissory ui with --module)"
        except PromissoryError as exc:
            note = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        except _BadForm as exc:
            note = str(exc)
        if action == "resume" and note.startswith("resumed as "):
            back = "/run/" + path_part(note.removeprefix("resumed as ").split(" ", 1)[0])
        return RedirectResponse(_with_note(back, note), status_code=303)

    return endpoint


class _BadForm(Exception):
    pass


def _act(view: View, action: str, id: str, form: dict[str, str]) -> str:
    """Do ``action`` on ``id``; return what happened, for the page's note."""
    if action == "resolve":
        text = form.get("value") or "null"
        try:
            value = msgspec.json.decode(text)
        except msgspec.DecodeError as exc:
            raise _BadForm(f"the value is not valid JSON ({exc}): {text}") from None
        outcome = _actions.resolve(view.store, id, value)
        return _said(id, outcome.applied, outcome.promise.state, "resolved")
    if action == "reject":
        outcome = _actions.reject(view.store, id, form.get("error") or None)
        return _said(id, outcome.applied, outcome.promise.state, "rejected")
    if action == "cancel":
        done = _actions.cancel(view.store, id, form.get("reason") or "canceled from the web view")
        if done.what == "actor":
            return (
                f"{id}: actor canceled, with {len(done.messages)} pending message(s); it ends"
                if done.applied
                else f"{id}: actor already ended, left as it was"
            )
        assert done.outcome is not None
        return _said(id, done.applied, done.outcome.promise.state, "canceled")
    if action == "resume":
        new = _actions.resume(view.runtime(), id)
        return f"resumed as {new} (hosted by this view's process)"
    raise _BadForm(f"no action {action!r}")


def _said(id: str, applied: bool, state: PromiseState, verb: str) -> str:
    return f"{id}: {verb}" if applied else f"{id}: already {state.value}, left as it was"


def _same_origin(request: Request) -> bool:
    """Whether a POST came from this view's own pages, as far as the browser says: its
    ``Sec-Fetch-Site``, else its ``Origin`` (an opaque ``null`` origin proves nothing either
    way; the CSRF value decides then).
    """
    site = request.headers.get("sec-fetch-site")
    if site is not None:
        return site in ("same-origin", "none")
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return True
    host = request.headers.get("host", "")
    return origin in (f"http://{host}", f"https://{host}")


def _refuse(status: int, text: str) -> Response:
    return HTMLResponse(page("refused", _pages.error_page("Refused", text)), status)


# -- live events and assets ------------------------------------------------------------------


def _events(view: View) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        watch = request.query_params.get("watch") or "*"
        since = request.query_params.get("since") or None
        return StreamingResponse(
            view.feed.stream(watch, since),
            media_type="text/event-stream",
            headers={"x-accel-buffering": "no"},
        )

    return endpoint


def _asset(text: str, media_type: str) -> Callable[[Request], Awaitable[Response]]:
    body = text.encode()

    async def endpoint(request: Request) -> Response:
        if not body:
            return Response(status_code=204)
        return Response(body, media_type=media_type)

    return endpoint


# -- the guard -------------------------------------------------------------------------------


class _Guard:
    """Lets a request in only with the token (and a loopback ``Host``, when asked)."""

    def __init__(self, app: ASGIApp, token: str | None, loopback_only: bool) -> None:
        self.app = app
        self.token = token
        self.loopback_only = loopback_only

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        host = _host_name(request.headers.get("host", ""))
        if self.loopback_only and host not in LOOPBACK_NAMES:
            refusal = _plain(403, "this view answers on its loopback address only")
            await refusal(scope, receive, send)
            return
        given = self._given(request)
        if self.token is not None and not (
            given is not None and hmac.compare_digest(given.encode(), self.token.encode())
        ):
            text = (
                "a token is required: open the URL that `promissory ui` printed "
                "(it ends in ?token=…)"
            )
            await _plain(403, text)(scope, receive, send)
            return
        set_cookie = self.token is not None and request.query_params.get("token") == self.token

        async def send_guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers.extend(SECURITY_HEADERS)
                if set_cookie:
                    assert self.token is not None
                    headers.append(
                        (
                            b"set-cookie",
                            f"{COOKIE}={self.token}; Path=/; HttpOnly; SameSite=Strict".encode(),
                        )
                    )
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_guarded)

    def _given(self, request: Request) -> str | None:
        token = request.query_params.get("token")
        if token:
            return token
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        if scheme.lower() in ("token", "bearer") and value:
            return value.strip()
        return request.cookies.get(COOKIE)


def _host_name(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if ":" in host else host


def _plain(status: int, text: str) -> Response:
    body = html(
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>refused'
        "</title></head><body><h1>Refused</h1><p>{}</p></body></html>",
        text,
    )
    headers = {k.decode(): v.decode() for k, v in SECURITY_HEADERS}
    return HTMLResponse(body, status, headers=headers)
