"""``/``: a page for people, to pick a user, rate movies and watch the recommendations
follow. Plain HTML and JavaScript from this package (no build step, works offline); it uses
only the public API: ``/users/{id}/recommendations``, ``/users/{id}/predictions``,
``/movies?q=`` and ``POST /ratings``."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from fastapi import APIRouter
from fastapi.responses import FileResponse

STATIC_DIR = Path(__file__).parent / "static"
MEDIA = {"app.js": "text/javascript", "app.css": "text/css"}

router = APIRouter(tags=["page"], include_in_schema=False)


@router.get("/")
def page() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html")


@router.get("/page/{asset}")
def asset(asset: Literal["app.js", "app.css"]) -> FileResponse:
    return FileResponse(STATIC_DIR / asset, media_type=MEDIA[asset])
