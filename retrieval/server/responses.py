"""What the JSON API answers: the response models (they document /docs) and how hits and items become them."""
from __future__ import annotations

import os

from fastapi.responses import Response
from pydantic import BaseModel

from indexer.media.audio_reader import AUDIO
from indexer.media.video_reader import VIDEO
from indexer.store.records import IMAGE, ItemRecord
from retrieval.query.search import Hit
from retrieval.server.engine import SearchPage
from retrieval.server.thumbnails import DEFAULT_THUMB_SIZE


class MomentOut(BaseModel):
    time: float  # seconds into the video
    score: float


class HitOut(BaseModel):
    id: int
    path: str
    name: str
    score: float
    relevance: float | None = None  # estimated probability that it is what was asked for (0-1)
    width: int | None
    height: int | None
    format: str | None
    mtime: float
    size: int
    thumb_url: str  # a video's: the frame at `time`; a sound's: its waveform
    image_url: str
    modality: str = IMAGE
    time: float | None = None  # a video's or a sound's best moment (seconds)
    moments: list[MomentOut] = []  # its best moments, best first
    video_url: str | None = None  # a video's file (HTTP Range: seekable); play it from `time`
    audio_url: str | None = None  # a sound's file (HTTP Range: seekable); play it from `time`
    ocr_snippet: str | None = None  # with `words`: the line of the picture's words that matched best
    ocr_matched: list[str] = []  # ... and its words that matched (to highlight)


class SearchOut(BaseModel):
    results: list[HitOut]
    offset: int
    limit: int
    has_more: bool
    next_offset: int | None
    took_ms: float
    upload_ids: list[str] = []  # one per image uploaded with this request: `upload=ID` searches by it again
    weaker_hidden: int = 0  # results below min_relevance left out of this page's reach


class ItemOut(BaseModel):
    id: int
    path: str
    name: str
    size: int
    mtime: float
    width: int | None
    height: int | None
    format: str | None
    modality: str
    indexed_at: float
    thumb_url: str
    image_url: str
    similar_url: str
    video_url: str | None = None
    audio_url: str | None = None


class ErrorDetail(BaseModel):
    code: str
    message: str


class ErrorOut(BaseModel):
    error: ErrorDetail


ERRORS = {status: {"model": ErrorOut} for status in (400, 401, 404, 410, 413, 422, 429, 503)}


def _urls(item_id: int, version: float, modality: str = IMAGE, at: float | None = None) -> dict:
    moment = f"&t={at:.3f}" if modality == VIDEO and at is not None else ""
    urls = {"thumb_url": f"/api/items/{item_id}/thumb?size={DEFAULT_THUMB_SIZE}{moment}&v={int(version)}",
            "image_url": f"/api/items/{item_id}/image"}
    if modality == VIDEO:
        urls["video_url"] = f"/api/items/{item_id}/video"
    if modality == AUDIO:
        urls["audio_url"] = f"/api/items/{item_id}/audio"
    return urls


def hit_out(hit: Hit) -> HitOut:
    moments = [MomentOut(time=round(start, 3), score=round(score, 6)) for start, score in hit.moments]
    return HitOut(id=hit.item_id, path=hit.path, name=os.path.basename(hit.path), score=round(hit.score, 6),
                  relevance=None if hit.relevance is None else round(hit.relevance, 4),
                  width=hit.width, height=hit.height, format=hit.format, mtime=hit.mtime, size=hit.size,
                  modality=hit.modality, time=None if hit.time is None else round(hit.time, 3), moments=moments,
                  ocr_snippet=hit.ocr_snippet, ocr_matched=list(hit.ocr_matched),
                  **_urls(hit.item_id, hit.mtime, hit.modality, hit.time))


def page_out(page: SearchPage) -> SearchOut:
    return SearchOut(results=[hit_out(hit) for hit in page.hits], offset=page.offset, limit=page.limit,
                     has_more=page.has_more, next_offset=page.offset + page.limit if page.has_more else None,
                     took_ms=page.took_ms, upload_ids=list(page.upload_ids),
                     weaker_hidden=page.weaker_hidden)


def page_response(page: SearchPage) -> Response:
    """The page as JSON, serialised once by pydantic: returned as a Response, FastAPI does not
    validate and encode it a second time against `response_model` (which stays for /docs). That
    second pass cost ~3 ms of a 48-result page."""
    return Response(page_out(page).model_dump_json(), media_type="application/json")


def item_out(record: ItemRecord) -> ItemOut:
    return ItemOut(id=record.id, path=record.path, name=os.path.basename(record.path), size=record.size,
                   mtime=record.mtime, width=record.width, height=record.height, format=record.format,
                   modality=record.modality, indexed_at=record.indexed_at,
                   similar_url=f"/api/items/{record.id}/similar",
                   **_urls(record.id, record.mtime, record.modality, 0.0))
