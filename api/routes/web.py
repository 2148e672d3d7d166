"""The browser clients: one folder of `web/` per app (`APPS`), served at /<app>/.

Static files from `web/` (plain ES modules, no build step), served with a strict
Content-Security-Policy: scripts, styles and connections from this origin only,
no inline code, media from the page's own streams. Only files of known types
under the apps' folders and common/ are served; anything else is 404.

`web/` ships in the wheel as a namespace package of data files (pyproject.toml), so it
is found by import wherever the project is installed (an image's site-packages, or the
source tree of an editable install), never by a path relative to this file.
"""

from __future__ import annotations

import asyncio
import importlib.util
from pathlib import Path, PurePosixPath

from fastapi import APIRouter
from fastapi import Path as PathParam
from fastapi.responses import RedirectResponse, Response

from infra.errors import NotFound

router = APIRouter(include_in_schema=False)


def web_root() -> Path:
    """The installed `web` folder: the first location of the `web` namespace package
    that holds the pages (another distribution's `web` folder, if any, is passed over)."""
    spec = importlib.util.find_spec("web")
    for location in (spec.submodule_search_locations or []) if spec else []:
        if (Path(location) / "candidate" / "index.html").is_file():
            return Path(location)
    raise RuntimeError("the web pages are not installed (no `web` package with candidate/)")


WEB_ROOT = web_root()
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".png": "image/png",
    ".svg": "image/svg+xml",
}
CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' blob: data:",
        "media-src 'self' blob: mediastream:",
        "connect-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    ]
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Permissions-Policy": "camera=(self), microphone=(self), geolocation=(), payment=()",
    # Pages change with deployments; revalidate rather than run a stale client.
    "Cache-Control": "no-cache",
}
FilePath = PathParam(pattern=r"^[A-Za-z0-9_-]{1,64}(\.[A-Za-z0-9]{1,8})?$")


def resolve(app: str, name: str) -> Path:
    """The path of `web/<app>/<name>`, or NotFound: no folders, no dotfiles, known types only."""
    relative = PurePosixPath(app, name or "index.html")
    if relative.suffix not in CONTENT_TYPES or len(relative.parts) != 2:
        raise NotFound("no such page", reason="page_not_found")
    return WEB_ROOT.joinpath(*relative.parts)


async def page(app: str, name: str) -> Response:
    path = resolve(app, name)
    try:
        body = await asyncio.to_thread(path.read_bytes)
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        raise NotFound("no such page", reason="page_not_found") from None
    return Response(body, media_type=CONTENT_TYPES[path.suffix], headers=SECURITY_HEADERS)


# Each app is a folder of web/: the candidate page, the proctor console, the organiser
# console, the examiners' review, the phone page that publishes a side camera.
APPS = ("candidate", "console", "organiser", "review", "phone")


def _serve(app: str) -> None:
    async def redirect() -> RedirectResponse:
        return RedirectResponse(f"/{app}/", status_code=308)

    async def index() -> Response:
        return await page(app, "index.html")

    async def asset(name: str = FilePath) -> Response:
        return await page(app, name)

    router.add_api_route(f"/{app}", redirect, methods=["GET"])
    router.add_api_route(f"/{app}/", index, methods=["GET"])
    router.add_api_route(f"/{app}/{{name}}", asset, methods=["GET"])


for _app in APPS:
    _serve(_app)


@router.get("/common/{name}")
async def common_asset(name: str = FilePath) -> Response:
    return await page("common", name)
