"""The web page: `/` is shared/server/web/index.html, `/web/<file>` its scripts and styles.

Static files with no build step and nothing from a CDN, so the page works offline. Every answer
carries a Content-Security-Policy that lets the page load only its own files and call only this
API (and no inline script runs), so a result's text can never become script.
"""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, HTTPException
from fastapi.responses import FileResponse

WEB_DIR = Path(__file__).resolve().parents[1] / "web"
#: what /web/ serves, by suffix (anything else there is not the page's)
TYPES = {".js": "text/javascript; charset=utf-8", ".css": "text/css; charset=utf-8"}
CSP = ("default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data: blob:; "
       "base-uri 'none'; form-action 'self'; frame-ancestors 'none'")
HEADERS = {"Content-Security-Policy": CSP, "X-Content-Type-Options": "nosniff", "Referrer-Policy": "no-referrer",
           "Cache-Control": "no-cache"}

web = APIRouter(include_in_schema=False)


@web.get("/")
async def page() -> FileResponse:
    return FileResponse(WEB_DIR / "index.html", media_type="text/html; charset=utf-8", headers=HEADERS)


@web.get("/web/{name}")
async def asset(name: str) -> FileResponse:
    path = WEB_DIR / name
    if "/" in name or name.startswith(".") or path.suffix not in TYPES or not path.is_file():
        raise HTTPException(404, f"no file {name!r}")
    return FileResponse(path, media_type=TYPES[path.suffix], headers=HEADERS)
