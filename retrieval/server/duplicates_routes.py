"""The duplicates review page and its JSON: groups of near-duplicates to look at; the server never moves or deletes."""
from __future__ import annotations

import os
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse
from pydantic import BaseModel

from retrieval.duplicates import DEFAULT_HASH_DISTANCE, DEFAULT_THRESHOLD, DuplicateOptions, find_duplicates
from retrieval.server.engine import SearchEngine
from retrieval.server.routes import STATIC_DIR

api = APIRouter(prefix="/api")
pages = APIRouter(include_in_schema=False)
MAX_GROUPS = 500


class DuplicateItemOut(BaseModel):
    id: int
    path: str
    name: str
    width: int | None
    height: int | None
    size: int
    mtime: float
    thumb_url: str
    image_url: str


class DuplicateGroupOut(BaseModel):
    items: list[DuplicateItemOut]
    keep: int
    score: float


class DuplicatesOut(BaseModel):
    groups: list[DuplicateGroupOut]
    total_groups: int
    pictures: int
    threshold: float
    seconds: float


def engine_of(request: Request) -> SearchEngine:
    return request.app.state.engine


@api.get("/duplicates", response_model=DuplicatesOut, summary="Groups of near-duplicate pictures (read-only)")
def duplicates(engine: Annotated[SearchEngine, Depends(engine_of)],
               threshold: Annotated[float, Query(gt=0.0, le=1.0, description="Cosine for a candidate pair")] = DEFAULT_THRESHOLD,
               hash_distance: Annotated[int, Query(ge=0, le=64, description="Perceptual hash bits that may differ")]
               = DEFAULT_HASH_DISTANCE,
               limit: Annotated[int, Query(ge=1, le=MAX_GROUPS, description="Groups returned, largest first")] = 100,
               ) -> DuplicatesOut:
    """Each group lists the suggested original (`keep`: the most pixels, then the oldest, then the most bytes) first."""
    report = find_duplicates(engine.library, DuplicateOptions(threshold=threshold, hash_distance=hash_distance))
    groups = [DuplicateGroupOut(keep=group.keep, score=round(group.score, 4), items=[
        DuplicateItemOut(id=item.id, path=item.path, name=os.path.basename(item.path), width=item.width,
                         height=item.height, size=item.size, mtime=item.mtime,
                         thumb_url=f"/api/items/{item.id}/thumb?size=256&v={int(item.mtime)}",
                         image_url=f"/api/items/{item.id}/image") for item in group.items])
        for group in report.groups[:limit]]
    return DuplicatesOut(groups=groups, total_groups=len(report.groups), pictures=report.pictures,
                         threshold=threshold, seconds=round(report.seconds, 3))


@pages.get("/duplicates")
def duplicates_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "duplicates.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
