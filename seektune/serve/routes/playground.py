"""The web playground: ``GET /`` (open without the key: the page asks for it) and its files under ``/static``."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, FastAPI
from fastapi.responses import FileResponse, HTMLResponse

STATIC_DIR = Path(__file__).parent.parent / "static"

router = APIRouter()


@router.get("/", include_in_schema=False)
async def playground():
    index = STATIC_DIR / "index.html"
    if index.is_file():
        return FileResponse(index, media_type="text/html")
    return HTMLResponse("<!doctype html><title>seektune serve</title><p>The web playground is not installed "
                        "(seektune/serve/static/index.html is missing). The API is at <code>/v1</code>.</p>")


def mount_static(app: FastAPI) -> None:
    """Serve ``static/`` at ``/static`` (a mount: routers cannot carry one)."""
    if STATIC_DIR.is_dir():
        from fastapi.staticfiles import StaticFiles

        app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
