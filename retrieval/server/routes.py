"""HTTP routes: JSON API under /api, the login page; each route makes one engine call."""
from __future__ import annotations

import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated
from urllib.parse import parse_qsl, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, RedirectResponse, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile

from indexer.media.audio_reader import AUDIO
from indexer.media.video_reader import VIDEO
from indexer.store.records import IMAGE, ItemRecord
from retrieval.errors import QueryError
from retrieval.query.search import Filters
from retrieval.server.engine import MAX_LIMIT, MAX_OFFSET, SearchEngine, SearchRequest
from retrieval.server.errors import ItemNotFoundError, TooManyRequestsError, UnauthorizedError, UploadTooLargeError
from retrieval.server.file_response import OpenFileResponse
from retrieval.server.files import FileGuard, OpenedFile
from retrieval.server.gates import UploadSlots, client_key
from retrieval.server.responses import ERRORS, ItemOut, SearchOut, item_out, page_response
from retrieval.server.security import COOKIE_NAME, safe_next, session_cookie_header, token_matches
from retrieval.server.sessions import SessionStore, SignInThrottle
from retrieval.server.thumbnails import DEFAULT_THUMB_SIZE, THUMB_SIZES, ThumbnailCache

STATIC_DIR = Path(__file__).parent / "static"
MULTIPART_SLACK_BYTES = 64 * 1024  # room for multipart headers around an image of the maximum size
MAX_UPLOAD_FILES = 4
LOGIN_BODY_LIMIT = 4096
MAX_EXTENSIONS = 32
MAX_MOMENT_S = 1e7  # 115 days: further into a video than any moment
MODALITIES = (IMAGE, VIDEO, AUDIO)
_EXTENSION = re.compile(r"^[a-z0-9]{1,10}$")
FIRST_DATE, LAST_DATE = datetime(2, 1, 1), datetime(9998, 12, 31, 23, 59, 59)  # converting to UTC never overflows

api = APIRouter(prefix="/api")
pages = APIRouter(include_in_schema=False)


# --- dependencies ------------------------------------------------------------------------
def engine_of(request: Request) -> SearchEngine:
    return request.app.state.engine


Engine = Annotated[SearchEngine, Depends(engine_of)]


def _timestamp(name: str, moment: datetime | None) -> float | None:
    if moment is None:
        return None
    if not FIRST_DATE <= moment.replace(tzinfo=None) <= LAST_DATE:
        raise QueryError(f"{name}: {moment.isoformat()} is out of range: give a date from "
                         f"{FIRST_DATE.date().isoformat()} to {LAST_DATE.date().isoformat()}")
    if moment.tzinfo is None:
        moment = moment.astimezone()  # a date without a zone is local time, as in the CLI
    return moment.astimezone(timezone.utc).timestamp()


def _extensions(values: list[str]) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for value in values:
        for part in value.split(","):
            part = part.strip().lstrip(".").lower()
            if not part:
                continue
            if not _EXTENSION.match(part):
                raise QueryError(f"ext: {part[:20]!r} is not a file extension (letters and digits, at most 10)")
            found[part] = None
            if len(found) > MAX_EXTENSIONS:
                raise QueryError(f"ext: at most {MAX_EXTENSIONS} different extensions in one search")
    return tuple(found)


PathGlob = Annotated[str | None, Query(max_length=1000, description="Only paths matching this glob, e.g. */2023/*")]
After = Annotated[datetime | None, Query(description="Modified on or after: 2024-07-31 or an ISO date-time (local)")]
Before = Annotated[datetime | None, Query(description="Modified before: 2024-07-31 or an ISO date-time (local)")]
Extensions = Annotated[list[str], Query(description="Extensions (repeat, or comma-separated): jpg, png ...")]


Modalities = Annotated[list[str], Query(description="Only these kinds (repeat, or comma-separated): image, video, "
                                                   "audio; all (the default) for every kind")]


def _modalities(values: list[str]) -> tuple[str, ...]:
    found: dict[str, None] = {}
    for value in values:
        for part in value.split(","):
            part = part.strip().lower()
            if not part or part == "all":
                continue
            if part not in MODALITIES:
                raise QueryError(f"modality: {part[:20]!r} is not one of {', '.join(MODALITIES)} (or all)")
            found[part] = None
    return tuple(found)


def filters_params(path: PathGlob = None, after: After = None, before: Before = None, ext: Extensions = [],
                   modality: Modalities = []) -> Filters:
    return Filters(path_glob=path or None, after=_timestamp("after", after), before=_timestamp("before", before),
                   extensions=_extensions(ext), modalities=_modalities(modality))


class Page(BaseModel):
    offset: int
    limit: int
    min_relevance: float = 0.0


def page_params(
    offset: Annotated[int, Query(ge=0, le=MAX_OFFSET, description="Skip this many results")] = 0,
    limit: Annotated[int, Query(ge=1, le=MAX_LIMIT, description="Results per page")] = 48,
    min_relevance: Annotated[float, Query(ge=0.0, le=1.0, description="Leave out results whose relevance "
                                          "(estimated probability of a match) is below this")] = 0.0,
) -> Page:
    return Page(offset=offset, limit=limit, min_relevance=min_relevance)


MAX_QUERY_CHARS = 2000
QueryText = Annotated[str | None, Query(max_length=MAX_QUERY_CHARS, description='Words; "beach + sunset - people", "2:red car"')]
LikeIds = Annotated[list[int], Query(description="Item ids whose stored vectors join the query (more like this)")]
Words = Annotated[str | None, Query(max_length=2000, description='Words in the picture (read by OCR at index time): '
                                    'alone they rank; with q, like or an image, only pictures holding them')]
UploadIds = Annotated[list[str], Query(description="Ids of images uploaded before (a POST's upload_ids) that join "
                                                   "the query, while the server keeps them (else 410)")]
ExcludeIds = Annotated[list[int], Query(description="Item ids left out of the results")]


# --- search ------------------------------------------------------------------------------
async def run_search(engine: SearchEngine, search_request: SearchRequest) -> Response:
    """One search, off the event loop (within its client's share: `gates.SearchGateMiddleware`)."""
    return page_response(await run_in_threadpool(engine.search, search_request))


@api.get("/search", response_model=SearchOut, responses=ERRORS, summary="Search by words and/or items")
async def search(engine: Engine, q: QueryText = None, like: LikeIds = [], upload: UploadIds = [],
                 exclude: ExcludeIds = [], words: Words = None, filters: Filters = Depends(filters_params),
                 page: Page = Depends(page_params)) -> Response:
    """Rank the index for `q` (combined terms as in the CLI) plus the stored vectors of `like` items and
    the images uploaded before as `upload`; with `words`, by (or among) the pictures whose words match them."""
    search_request = SearchRequest(text=q, like_ids=tuple(like), upload_ids=tuple(upload), exclude_ids=tuple(exclude),
                                   filters=filters, offset=page.offset, limit=page.limit, words=words,
                                   min_relevance=page.min_relevance)
    return await run_search(engine, search_request)


UPLOAD_BODY = {"requestBody": {"content": {
    "multipart/form-data": {"schema": {"type": "object", "properties": {
        "image": {"type": "string", "format": "binary", "description": "The query image (repeatable)"},
        "q": {"type": "string", "description": "Words combined with the image (as the q parameter)"}},
        "required": ["image"]}},
    "image/*": {"schema": {"type": "string", "format": "binary"}},
}, "required": True}}


@api.post("/search", response_model=SearchOut, responses=ERRORS, openapi_extra=UPLOAD_BODY,
          summary="Search by an uploaded image (plus optional words, items, filters)")
async def search_by_image(request: Request, engine: Engine, q: QueryText = None, like: LikeIds = [],
                          exclude: ExcludeIds = [], words: Words = None, filters: Filters = Depends(filters_params),
                          page: Page = Depends(page_params)) -> Response:
    """The body is multipart/form-data with field `image` (and optional words in field `q`, combined with
    the image and with the `q` parameter), or the raw image bytes (Content-Type image/*). The answer's
    `upload_ids` name the images: `GET /api/search?upload=ID` searches by one again without sending it.

    At most `upload_slots` uploads are read and decoded at once (503 with Retry-After when all are
    taken for `upload_wait_s`), each within the decode memory budget (413 beyond it)."""
    uploads: UploadSlots = request.app.state.uploads
    async with uploads.slot():
        images, form_text = await read_images(request, request.app.state.config.max_upload_bytes)
        text = " + ".join(part for part in (q, form_text) if part and part.strip()) or None
        search_request = SearchRequest(text=text, like_ids=tuple(like), images=tuple(images),
                                       exclude_ids=tuple(exclude), filters=filters, offset=page.offset, limit=page.limit,
                                       max_decode_bytes=request.app.state.config.max_decode_bytes, words=words,
                                       min_relevance=page.min_relevance)
        return page_response(await run_in_threadpool(engine.search, search_request))


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with UploadTooLargeError as soon as it passes `limit` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise QueryError("bad Content-Length header")
        if int(declared) > limit:
            raise UploadTooLargeError(f"the upload is {int(declared)} bytes; the limit is {limit}")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > limit:
            raise UploadTooLargeError(f"the upload is over the limit of {limit} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def read_images(request: Request, max_bytes: int) -> tuple[list[bytes], str | None]:
    """The uploaded images, and the words of a multipart form's `q` field (None without one)."""
    content_type = request.headers.get("content-type", "").lower()
    if content_type.startswith("multipart/form-data"):
        body = await read_body(request, max_bytes * MAX_UPLOAD_FILES + MULTIPART_SLACK_BYTES)

        async def replay() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        form = await Request(request.scope, replay).form(max_files=MAX_UPLOAD_FILES, max_fields=20)
        try:
            images = [await part.read() for part in form.getlist("image") if isinstance(part, UploadFile)]
            words = [part for part in form.getlist("q") if isinstance(part, str) and part.strip()]
        finally:
            await form.close()
        form_text = " + ".join(words) or None
        if form_text is not None and len(form_text) > MAX_QUERY_CHARS:
            raise QueryError(f"q: at most {MAX_QUERY_CHARS} characters")
        if not images:
            raise QueryError("the form has no file in field 'image'")
        for data in images:
            if len(data) > max_bytes:
                raise UploadTooLargeError(f"an uploaded image is {len(data)} bytes; the limit is {max_bytes}")
        return images, form_text
    if content_type.startswith(("image/", "application/octet-stream")):
        data = await read_body(request, max_bytes)
        if not data:
            raise QueryError("the request body is empty: send the image")
        return [data], None
    raise QueryError("send the image as multipart/form-data (field 'image') or as a raw image/* body")


# --- items -------------------------------------------------------------------------------
def item_file(request: Request, engine: SearchEngine, item_id: int) -> tuple[ItemRecord, OpenedFile]:
    """An item and its file, open and checked (`files.FileGuard`); the caller closes or serves it."""
    record = engine.item(item_id)
    files: FileGuard = request.app.state.files
    return record, files.open(record)


@api.get("/items/{item_id}", response_model=ItemOut, responses=ERRORS, summary="An item's metadata")
def item(item_id: int, engine: Engine) -> ItemOut:
    return item_out(engine.item(item_id))


@api.get("/items/{item_id}/similar", response_model=SearchOut, responses=ERRORS, summary="More like this item")
async def similar(item_id: int, engine: Engine, words: Words = None, filters: Filters = Depends(filters_params),
                  page: Page = Depends(page_params),
                  include_self: Annotated[bool, Query(description="Also list the item itself (first, score 1)")] = False,
                  ) -> Response:
    """Search with the item's stored vector as the query; the item itself is left out unless `include_self`."""
    search_request = SearchRequest(like_ids=(item_id,), exclude_ids=() if include_self else (item_id,),
                                   filters=filters, offset=page.offset, limit=page.limit, words=words,
                                   min_relevance=page.min_relevance)
    return await run_search(engine, search_request)


@api.get("/items/{item_id}/thumb", responses={**ERRORS, 200: {"content": {"image/jpeg": {}}}},
         response_class=Response, summary="A JPEG thumbnail (made once, cached on disk)")
def thumbnail(item_id: int, request: Request, engine: Engine,
              size: Annotated[int, Query(description=f"Longest side: one of {THUMB_SIZES}")] = DEFAULT_THUMB_SIZE,
              t: Annotated[float | None, Query(ge=0, le=MAX_MOMENT_S, allow_inf_nan=False,
                                               description="A video's moment (seconds): its frame then")] = None,
              v: Annotated[str | None, Query(description="Cache buster; ignored")] = None) -> Response:
    if size not in THUMB_SIZES:
        raise QueryError(f"size must be one of {', '.join(map(str, THUMB_SIZES))}")
    record, opened = item_file(request, engine, item_id)
    thumbs: ThumbnailCache = request.app.state.thumbnails
    with opened:  # checked and open: the thumbnail is made from (or cached for) this very file
        if record.modality == VIDEO:  # its frame at the stored moment nearest t (the first without t)
            t = engine.nearest_moment(item_id, t or 0.0)
        elif t is not None and record.modality != AUDIO:  # a sound's picture is its whole waveform: t is ignored
            raise QueryError(f"item {item_id} is not a video: t applies to videos only")
        else:
            t = None
        path = thumbs.get(record, opened, size, t)
    stat = path.stat()
    moment = "" if t is None else f"-{round(t * 1000):x}"
    etag = f'"t{item_id}-{size}{moment}-{stat.st_mtime_ns:x}-{stat.st_size:x}"'
    headers = {"ETag": etag, "Cache-Control": "private, max-age=86400"}
    if etag in (part.strip() for part in request.headers.get("if-none-match", "").split(",")):
        return Response(status_code=304, headers=headers)
    return Response(path.read_bytes(), media_type="image/jpeg", headers=headers)


@api.get("/items/{item_id}/image", responses={**ERRORS, 200: {"content": {"image/*": {}}}},
         response_class=FileResponse, summary="The full image file")
def image(item_id: int, request: Request, engine: Engine) -> FileResponse:
    record, opened = item_file(request, engine, item_id)  # the response sends this open file, then closes it
    return OpenFileResponse(opened, filename=os.path.basename(record.path),
                            headers={"Cache-Control": "private, max-age=3600"})


@api.get("/items/{item_id}/video", responses={**ERRORS, 200: {"content": {"video/*": {}}},
                                             206: {"description": "The byte range asked for (Range: bytes=...)"}},
         response_class=FileResponse, summary="A video's file (HTTP Range requests: the player seeks)")
def video(item_id: int, request: Request, engine: Engine) -> FileResponse:
    """The same checked, open file as /image, for an item indexed as a video (404 for other items)."""
    return _file_of(request, engine, item_id, VIDEO, "a video")


@api.get("/items/{item_id}/audio", responses={**ERRORS, 200: {"content": {"audio/*": {}}},
                                             206: {"description": "The byte range asked for (Range: bytes=...)"}},
         response_class=FileResponse, summary="A sound's file (HTTP Range requests: the player seeks)")
def audio(item_id: int, request: Request, engine: Engine) -> FileResponse:
    """The same checked, open file as /image, for an item indexed as a sound (404 for other items)."""
    return _file_of(request, engine, item_id, AUDIO, "a sound")


def _file_of(request: Request, engine, item_id: int, modality: str, what: str) -> FileResponse:
    """The checked, open file of an item indexed as `modality` (404 for other items)."""
    if engine.item(item_id).modality != modality:
        raise ItemNotFoundError(f"item {item_id} is not {what}")
    record, opened = item_file(request, engine, item_id)
    return OpenFileResponse(opened, filename=os.path.basename(record.path),
                            headers={"Cache-Control": "private, max-age=3600"})


# --- the index ---------------------------------------------------------------------------
@api.get("/status", summary="What is in the index; what the server has loaded")
def status(request: Request, engine: Engine) -> dict:
    info = engine.status()
    config = request.app.state.config
    info["server"].update(max_upload_bytes=config.max_upload_bytes, auth=config.token is not None)
    return info


@api.get("/health", summary="Liveness: answers once the model and index are loaded")
def health() -> dict:
    return {"ok": True}


# --- pages -------------------------------------------------------------------------------
def _page(name: str) -> FileResponse:
    return FileResponse(STATIC_DIR / name, media_type="text/html", headers={"Cache-Control": "no-cache"})


@pages.get("/")
def index_page() -> FileResponse:
    return _page("index.html")


@pages.get("/login")
def login_page() -> FileResponse:
    return _page("login.html")


@pages.post("/login")
async def login(request: Request) -> Response:
    """Form field `token`: on success a new session (its id in the cookie) and a redirect to `next`.

    Wrong tokens are braked per client (`SignInThrottle`): while a client waits, its tries are
    refused unchecked (429, or back to the login page with error=wait)."""
    token = request.app.state.config.token
    fields = dict(parse_qsl((await read_body(request, LOGIN_BODY_LIMIT)).decode("utf-8", "replace")))
    target = safe_next(fields.get("next") or request.query_params.get("next"))
    if token is None:
        return RedirectResponse(target, status_code=303)
    throttle: SignInThrottle = request.app.state.throttle
    client = client_key(request.scope)
    html = "text/html" in request.headers.get("accept", "")
    wait = throttle.wait_s(client)
    if wait <= 0 and token_matches(fields.get("token"), token):
        throttle.succeeded(client)
        sessions: SessionStore = request.app.state.sessions
        response = RedirectResponse(target, status_code=303)
        response.headers["set-cookie"] = session_cookie_header(sessions.start())
        return response
    if wait <= 0:
        throttle.failed(client)
    if html:
        error = "wait" if wait > 0 else "1"
        return RedirectResponse("/login?" + urlencode({"next": target, "error": error}), status_code=303)
    if wait > 0:
        raise TooManyRequestsError(f"too many wrong tokens from this address: try again in {wait:.0f} s",
                                   retry_after=wait)
    raise UnauthorizedError("wrong token")


@pages.post("/logout")
def logout(request: Request) -> Response:
    """Ends the session the cookie names (on the server: the cookie no longer works anywhere)."""
    sessions: SessionStore = request.app.state.sessions
    sessions.end(request.cookies.get(COOKIE_NAME))
    response = RedirectResponse("/login", status_code=303)
    response.headers["set-cookie"] = f"{COOKIE_NAME}=; Path=/; Max-Age=0; HttpOnly; SameSite=Strict"
    return response
