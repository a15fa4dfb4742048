"""The app factory: FastAPI app = routes + static UI + access control + errors mapped to JSON."""
from __future__ import annotations

import logging
from contextlib import asynccontextmanager
from importlib import resources

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from indexer.errors import DecodeError, MmsearchError, ModelMismatchError, StoreError
from retrieval.errors import QueryError
from retrieval.server.config import ServerConfig
from retrieval.server.duplicates_routes import api as duplicates_api
from retrieval.server.duplicates_routes import pages as duplicates_pages
from retrieval.server.engine import SearchEngine
from retrieval.server.errors import (
    FileUnavailableError,
    ForbiddenFileError,
    ItemNotFoundError,
    RetryLaterError,
    ServerBusyError,
    TooManyRequestsError,
    UnauthorizedError,
    UploadExpiredError,
    UploadTooLargeError,
    error_payload,
)
from retrieval.server.files import FileGuard
from retrieval.server.gates import ClientGate, SearchGateMiddleware, UploadSlots
from retrieval.server.routes import STATIC_DIR, api, pages
from retrieval.server.security import AccessMiddleware, HeadersMiddleware
from retrieval.server.sessions import SessionStore, SignInThrottle
from retrieval.server.thumbnails import ThumbnailCache

log = logging.getLogger(__name__)

# typed error -> (HTTP status, code); the first matching class wins
ERROR_STATUS: tuple[tuple[type[MmsearchError], int, str], ...] = (
    (UnauthorizedError, 401, "unauthorized"),
    (ItemNotFoundError, 404, "not_found"),
    (ForbiddenFileError, 403, "forbidden_file"),
    (FileUnavailableError, 404, "file_unavailable"),
    (UploadTooLargeError, 413, "too_large"),
    (UploadExpiredError, 410, "upload_expired"),
    (TooManyRequestsError, 429, "too_many_requests"),
    (ServerBusyError, 503, "busy"),
    (QueryError, 400, "bad_query"),
    (DecodeError, 400, "bad_query"),
    (ModelMismatchError, 409, "model_changed"),
    (StoreError, 503, "store_unavailable"),
)
HTML_HEADERS = {  # the UI's pages: scripts and styles from this server only, no inline code, no framing
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; script-src 'self'; style-src 'self'; "
                               "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'",
}
COMMON_HEADERS = {"X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


def status_for(exc: MmsearchError) -> tuple[int, str]:
    for error_type, status, code in ERROR_STATUS:
        if isinstance(exc, error_type):
            return status, code
    return 500, "internal"


def create_app(config: ServerConfig, engine: SearchEngine | None = None) -> FastAPI:
    """The whole server. Loads the engine (model + index) now unless one is given; the app then
    owns and closes what it loaded."""
    config.check()
    owned = engine is None
    engine = engine if engine is not None else SearchEngine.open(config)

    @asynccontextmanager
    async def lifespan(_app: FastAPI):
        yield
        if owned:
            engine.close()

    app = FastAPI(title="mmsearch", summary="Search an image collection by words or by example.",
                  version="0.1.0", docs_url=None, redoc_url=None, lifespan=lifespan)
    app.state.engine = engine
    app.state.config = config
    app.state.thumbnails = ThumbnailCache(config.thumbs_dir)
    app.state.files = FileGuard(engine.library, allow_hard_links=config.allow_hard_links)
    app.state.sessions = SessionStore()
    app.state.throttle = SignInThrottle()
    app.state.searches = ClientGate(running=config.searches_per_client or engine.searches_per_client,
                                    queued=config.queued_per_client)
    app.state.uploads = UploadSlots(config.upload_slots, config.upload_wait_s)
    app.include_router(api)
    app.include_router(pages)
    app.include_router(duplicates_api)
    app.include_router(duplicates_pages)
    app.mount("/static", StaticFiles(directory=STATIC_DIR, follow_symlink=False), name="static")
    _add_docs(app)
    _add_error_handlers(app)

    # no CORSMiddleware: other origins get no Access-Control-* headers, so browsers keep them out
    app.add_middleware(SearchGateMiddleware, gate=app.state.searches)  # inside the access check
    app.add_middleware(AccessMiddleware, token=config.token, trusted_hosts=config.trusted_hosts,
                       sessions=app.state.sessions, throttle=app.state.throttle)
    app.add_middleware(HeadersMiddleware, common=COMMON_HEADERS, html=HTML_HEADERS, html_exempt=("/docs",))
    return app


def _add_docs(app: FastAPI) -> None:
    """/docs with Swagger UI's files served from here (fastapi-offline ships them): no CDN."""
    assets = resources.files("fastapi_offline") / "static"
    app.mount("/docs-assets", StaticFiles(directory=str(assets)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url, title="mmsearch API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon.png")


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(MmsearchError)
    async def typed_error(_request: Request, exc: MmsearchError) -> JSONResponse:
        status, code = status_for(exc)
        if status >= 500 and not isinstance(exc, RetryLaterError):
            log.error("%s: %s", type(exc).__name__, exc)
        headers = {"WWW-Authenticate": 'Bearer realm="mmsearch"'} if status == 401 else None
        if isinstance(exc, RetryLaterError):
            headers = {"Retry-After": str(exc.retry_after)}
        return JSONResponse(error_payload(code, str(exc)), status_code=status, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(_request: Request, exc: RequestValidationError) -> JSONResponse:
        details = [{"where": ".".join(str(part) for part in error.get("loc", ())), "message": error.get("msg", "")}
                   for error in exc.errors()]
        message = "; ".join(f"{detail['where']}: {detail['message']}" for detail in details) or "invalid request"
        return JSONResponse(error_payload("validation", message, details=details), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        return JSONResponse(error_payload(code, str(exc.detail)), status_code=exc.status_code,
                            headers=getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def unexpected_error(_request: Request, exc: Exception) -> JSONResponse:
        log.exception("unexpected error")
        return JSONResponse(error_payload("internal", "internal server error"), status_code=500)
