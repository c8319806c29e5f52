"""The web dashboard's ASGI app (Starlette): pages rendered on the server, a little plain JavaScript.

Pages: ``/events`` (filters, thumbnails, pages; new events appear live), ``/events/{id}`` and
``/sources/{id}`` (the media with its anomaly-score curve and class probabilities under it and
a cursor that follows playback; live while a watcher writes), ``/sources`` and ``/analyse``
(upload a file, analyse it with a run in the background). JSON under ``/api``; live updates
are server-sent events from ``/api/live``, read from the store by polling a short read-only
query, so viewers never block the watcher writing it.

Files are only ever served by id (a source's media, an event's thumbnail) and only when the
path the store names resolves inside a configured folder; nothing in a request is a path.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import logging
import math
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request
from starlette.responses import FileResponse, JSONResponse, PlainTextResponse, RedirectResponse, StreamingResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates

from avar.media.decode import MEDIA_EXTENSIONS
from avar.serve.dashboard.guard import LOCAL_HOSTS, BadRequest, Guard, confined, hide_tokens, number, when
from avar.serve.dashboard.jobs import Uploads, UploadError
from avar.serve.dashboard.reader import MAX_ID, EventFilter, StoreReader, fits
from avar.serve.store import EventStore

log = logging.getLogger(__name__)

HERE = Path(__file__).parent
CHUNK = 1 << 16


@dataclass
class DashboardConfig:
    """Settings of ``avar serve``; folders default to ones beside the event store."""

    db: Path
    """The event store (SQLite) that ``avar watch --db`` writes; created if missing."""
    runs: Path | None = None
    """A run directory, or a folder of them, offered on the 'analyse a file' page."""
    media: list[Path] = field(default_factory=list)
    """Folders whose files may be played: a source's media is served only from inside one of them."""
    thumbnails: Path | None = None
    """Folder of event thumbnails (default: ``thumbnails`` beside the store)."""
    uploads: Path | None = None
    """Where uploaded files are kept (default: ``uploads`` beside the store)."""
    token: str | None = None
    """Required on every request when set (header ``Authorization: Bearer``, cookie, or ``?token=``)."""
    host: str = "127.0.0.1"
    """The address it is served on: requests must name it (or localhost) in their ``Host``."""
    allowed_hosts: list[str] = field(default_factory=list)
    """More names requests may give in ``Host`` (a DNS name or proxy in front of the dashboard)."""
    max_upload_mb: float = 512.0
    """Largest upload accepted, in MiB."""
    page_size: int = 50
    """Events per page of the list."""
    poll_seconds: float = 0.5
    """How often live views look for new events and steps."""
    window_seconds: float = 3600.0
    """Seconds of a source's timeline shown when no event is chosen (its latest)."""
    heartbeat_seconds: float = 5.0
    """An idle live stream sends a comment this often, so proxies and browsers keep it open."""

    def __post_init__(self) -> None:
        self.db = Path(self.db)
        self.thumbnails = Path(self.thumbnails) if self.thumbnails else self.db.parent / "thumbnails"
        self.uploads = Path(self.uploads) if self.uploads else self.db.parent / "uploads"
        self.media = [Path(m) for m in self.media]
        for folder in self.media:
            if not folder.is_dir():
                raise ValueError(f"--media {folder}: no such folder; pass the folder that holds the watched files")
        if not self.max_upload_mb > 0:
            raise ValueError(f"--max-upload-mb must be positive, got {self.max_upload_mb}")
        if self.page_size < 1:
            raise ValueError(f"page size must be >= 1, got {self.page_size}")

    @property
    def media_roots(self) -> list[Path]:
        return [p.resolve() for p in (*self.media, self.uploads)]

    @property
    def thumbnail_roots(self) -> list[Path]:
        return [p.resolve() for p in (self.thumbnails, *self.media)]


def event_filter(request: Request) -> EventFilter:
    return EventFilter(label=request.query_params.get("label") or None, source=number(request, "source", int, 0),
                       since=when(request, "since"), until=when(request, "until"),
                       min_score=number(request, "min_score", float, 0.0), after=number(request, "after", int, 0))


def resume_point(last_event_id: str) -> tuple[int, float | None] | None:
    """``(event id, step time)`` from a live stream's ``Last-Event-ID`` (``ID/TIME``, as the stream
    marks its messages); None when it is absent or not one (the stream then starts afresh)."""
    event, sep, step = last_event_id.partition("/")
    try:
        after, steps_after = int(event), float(step) if step else None
    except ValueError:
        return None
    if not sep or not fits(after) or steps_after is not None and not math.isfinite(steps_after):
        return None
    return after, steps_after


def short_source(uri: str) -> str:
    """A source as a list shows it: a file by its name, a URL whole (the full name is the link's title)."""
    return uri if "://" in uri else Path(uri).name


def utc(seconds: float | None) -> str:
    if seconds is None:
        return ""
    return dt.datetime.fromtimestamp(seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def create_app(config: DashboardConfig, stopping=lambda: False) -> Starlette:
    """The dashboard over ``config.db`` (created, or upgraded to the current schema, if needed).
    ``stopping()`` turning true ends the live streams (the server is shutting down)."""
    EventStore(config.db).close()
    reader = StoreReader(config.db)
    uploads = Uploads(config.uploads, config.db, config.thumbnails, config.runs, int(config.max_upload_mb * 2**20))
    templates = Jinja2Templates(directory=str(HERE / "templates"))
    templates.env.filters["utc"] = utc
    templates.env.filters["short_source"] = short_source

    def page(request: Request, name: str, status: int = 200, **context):
        return templates.TemplateResponse(request, name, {"nav": name.split(".")[0], **context}, status_code=status)

    async def events_page(request: Request):
        try:
            filters = event_filter(request)
            size = config.page_size
            page_number = number(request, "page", int, 1, MAX_ID // size) or 1
        except BadRequest as exc:
            return page(request, "error.html", 400, message=str(exc))
        # The newest id before the page is read: live updates start after it, and the page
        # script drops an event it already shows, so none is lost or shown twice.
        last_id, rows, total, labels, sources = await run_in_threadpool(lambda: (
            reader.last_event_id(), reader.events(filters, limit=size, offset=(page_number - 1) * size),
            reader.count(filters), reader.labels(), reader.sources()))
        query = {k: v for k, v in request.query_params.items() if k not in ("page", "token") and v}
        return page(request, "events.html", events=rows, total=total, number=page_number,
                    pages=max(1, math.ceil(total / size)), labels=labels, sources=sources, query=query,
                    filters=filters, last_id=last_id)

    async def sources_page(request: Request):
        return page(request, "sources.html", sources=await run_in_threadpool(reader.sources))

    async def source_view(request: Request, source_id: int, focus: dict | None = None):
        source = await run_in_threadpool(reader.source, source_id)
        if source is None:
            return page(request, "error.html", 404, message=f"no source {source_id} in {config.db.name}")
        last_id = await run_in_threadpool(reader.last_event_id)
        if focus is not None:  # the event and as long again (10 s at least) either side
            pad = max(10.0, focus["end"] - focus["start"])
            since, until = focus["start"] - pad, focus["end"] + pad
        else:  # the latest hour
            since, until = (source["watched_to"] or 0.0) - config.window_seconds, None
        steps = await run_in_threadpool(lambda: reader.steps(source_id, since=since, until=until))
        events = await run_in_threadpool(reader.events, EventFilter(source=source_id), limit=1000)
        gaps = await run_in_threadpool(reader.gaps, source_id)
        playable = confined(source["uri"], config.media_roots, MEDIA_EXTENSIONS) is not None
        return page(request, "source.html", source=source, steps=steps, events=events, gaps=gaps, focus=focus,
                    playable=playable, live=focus is None, last_id=last_id)

    async def source_page(request: Request):
        return await source_view(request, request.path_params["source_id"])

    async def event_page(request: Request):
        event = await run_in_threadpool(reader.event, request.path_params["event_id"])
        if event is None:
            return page(request, "error.html", 404, message=f"no event {request.path_params['event_id']}")
        event.pop("thumbnail_path")
        return await source_view(request, event["source_id"], focus=event)

    async def analyse_page(request: Request):
        return page(request, "analyse.html", runs=list(uploads.runs()), max_mb=config.max_upload_mb,
                    extensions=sorted(MEDIA_EXTENSIONS))

    async def media(request: Request):
        source = await run_in_threadpool(reader.source, request.path_params["source_id"])
        path = confined(source and source["uri"], config.media_roots, MEDIA_EXTENSIONS)
        if path is None:
            return PlainTextResponse("no playable file for this source inside the dashboard's --media folders",
                                     status_code=404)
        return FileResponse(path)

    async def thumbnail(request: Request):
        event = await run_in_threadpool(reader.event, request.path_params["event_id"])
        path = confined(event and event["thumbnail_path"], config.thumbnail_roots, {".jpg", ".jpeg"})
        if path is None:
            return PlainTextResponse("no thumbnail for this event", status_code=404)
        return FileResponse(path, media_type="image/jpeg")

    async def api_events(request: Request):
        try:
            filters = event_filter(request)
            limit = min(number(request, "limit", int, 1) or 500, 5000)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        # With ``after`` a poller reads forward, oldest first; otherwise the newest page.
        rows = await run_in_threadpool(reader.events, filters, limit=limit, newest_first=filters.after is None)
        return JSONResponse({"events": rows})

    async def api_sources(request: Request):
        return JSONResponse({"sources": await run_in_threadpool(reader.sources)})

    async def api_steps(request: Request):
        try:
            after = number(request, "after", float)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        source_id = request.path_params["source_id"]
        if await run_in_threadpool(reader.source, source_id) is None:
            return JSONResponse({"error": f"no source {source_id}"}, status_code=404)
        return JSONResponse({"steps": await run_in_threadpool(reader.steps, source_id, after=after)})

    async def api_live(request: Request):
        try:
            filters = event_filter(request)
            steps_after = number(request, "steps_after", float)
        except BadRequest as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        after = filters.after if filters.after is not None else await run_in_threadpool(reader.last_event_id)
        # A browser that reconnects sends the id of the last message it got: resume there.
        resumed = resume_point(request.headers.get("last-event-id", ""))
        if resumed is not None:
            after, steps_after = resumed

        async def stream():
            nonlocal after, steps_after
            quiet_since = time.monotonic()
            yield "retry: 2000\n\n"
            while not stopping() and not await request.is_disconnected():
                events = await run_in_threadpool(reader.events, replace(filters, after=after), limit=500,
                                                 newest_first=False)
                steps = []
                if filters.source is not None:
                    steps = await run_in_threadpool(reader.steps, filters.source, after=steps_after)
                after = events[-1]["id"] if events else after
                steps_after = steps[-1]["time"] if steps else steps_after
                mark = f"id: {after}/{'' if steps_after is None else steps_after}\n"
                if events:
                    yield f"event: events\n{mark}data: {json.dumps(events)}\n\n"
                if steps:
                    yield f"event: steps\n{mark}data: {json.dumps(steps)}\n\n"
                if events or steps:
                    quiet_since = time.monotonic()
                elif time.monotonic() - quiet_since >= config.heartbeat_seconds:
                    quiet_since = time.monotonic()
                    yield ": still here\n\n"
                await asyncio.sleep(config.poll_seconds)

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    async def api_upload(request: Request):
        name, run = request.query_params.get("name", ""), request.query_params.get("run", "")
        part = None
        try:
            length = request.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > uploads.max_bytes:
                raise UploadError(f"{name!r} is {int(length) / 2**20:.0f} MiB, more than this dashboard's limit of "
                                  f"{config.max_upload_mb:g} MiB (avar serve --max-upload-mb)", 413)
            job_id, part, final = uploads.start(name, run)
            size = 0
            with part.open("wb") as out:
                async for chunk in request.stream():
                    size += len(chunk)
                    if size > uploads.max_bytes:
                        raise UploadError(f"{name!r} is more than this dashboard's limit of "
                                          f"{config.max_upload_mb:g} MiB (avar serve --max-upload-mb)", 413)
                    out.write(chunk)
            if size == 0:
                raise UploadError(f"{name!r} is empty; pick a video or sound file")
            job = await run_in_threadpool(uploads.accept, job_id, part, final, name, run)
        except UploadError as exc:
            if part is not None:
                part.unlink(missing_ok=True)
            return JSONResponse({"error": str(exc)}, status_code=exc.status)
        except ClientDisconnect:  # the browser went away part way: nobody reads an answer
            part.unlink(missing_ok=True)
            log.info("upload of %r abandoned by the client before its end; nothing was kept", name)
            return JSONResponse({"error": "upload abandoned"}, status_code=400)
        except BaseException:
            if part is not None:
                part.unlink(missing_ok=True)
            raise
        return JSONResponse(job.to_dict(), status_code=201)

    async def api_job(request: Request):
        job = uploads.jobs.get(request.path_params["job_id"])
        if job is None:
            return JSONResponse({"error": "no such job"}, status_code=404)
        return JSONResponse(job.to_dict())

    routes = [
        Route("/", lambda request: RedirectResponse("/events", status_code=303)),
        Route("/events", events_page),
        Route("/events/{event_id:int}", event_page),
        Route("/sources", sources_page),
        Route("/sources/{source_id:int}", source_page),
        Route("/analyse", analyse_page),
        Route("/media/{source_id:int}", media),
        Route("/thumbnails/{event_id:int}", thumbnail),
        Route("/api/events", api_events),
        Route("/api/sources", api_sources),
        Route("/api/sources/{source_id:int}/steps", api_steps),
        Route("/api/live", api_live),
        Route("/api/uploads", api_upload, methods=["POST"]),
        Route("/api/jobs/{job_id:str}", api_job),
        Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
    ]
    @contextlib.asynccontextmanager
    async def lifespan(app):
        yield
        uploads.close()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.uploads = uploads
    return Guard(app, config.host, config.allowed_hosts, config.token)


def make_server(config: DashboardConfig, port: int = 8080, log_level: str = "info"):
    """A uvicorn server for the dashboard on ``config.host`` (``port`` 0: any free port); its
    live streams end when it is asked to stop. Off localhost, a token is required. Token values
    never reach its log."""
    import uvicorn

    if config.host not in LOCAL_HOSTS and not config.token:
        raise ValueError(f"--host {config.host} makes the dashboard reachable from other machines; give it a token "
                         "with --token TOKEN or the AVAR_TOKEN environment variable (every request must then carry it)")
    servers = []
    app = create_app(config, stopping=lambda: bool(servers) and servers[0].should_exit)
    servers.append(uvicorn.Server(uvicorn.Config(app, host=config.host, port=port, log_level=log_level,
                                                 timeout_graceful_shutdown=5)))
    hide_tokens("uvicorn.access", "uvicorn.error")  # after uvicorn.Config, which sets up its logging
    return servers[0]
