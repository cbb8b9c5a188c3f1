"""The console's static files: its own pages, script modules and style (``static/``, no build step),
and the chart library, uPlot, from the installed ``uplot-python`` package (``uPlot.iife.js`` and its
style: never a CDN, never a copy in this repository). Each answer carries an ETag; the library is
sent gzip-compressed when the browser accepts it (120 KB -> 30 KB), under a versioned URL that
browsers keep for a year; compressed once, when the server starts. Its style is inlined into the
job page, as the console's own."""

from __future__ import annotations

import gzip
import hashlib
import html
import importlib.metadata
import importlib.util
import threading
from dataclasses import dataclass
from pathlib import Path

from starlette.requests import Request
from starlette.responses import Response

STATIC = Path(__file__).with_name("static")
CHART_PACKAGE, CHART_DISTRIBUTION = "uplot", "uplot-python"
CHART_SCRIPT, CHART_STYLE = "uPlot.iife.js", "uPlot.min.css"  # in the package's ``static/``
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8"}
# Inlined into the pages: the style (no render-blocking request: the first paint does not wait on a
# busy server) and the script that starts a page's first data requests in its <head>.
INLINED = {"console-css": "console.css", "early-fetch": "early.js"}
SECURITY_HEADERS = {"X-Frame-Options": "DENY", "X-Content-Type-Options": "nosniff",
                    "Referrer-Policy": "same-origin"}


@dataclass
class Asset:
    body: bytes
    gzipped: bytes | None
    media_type: str
    etag: str
    immutable: bool = False


def chart_files() -> tuple[str, Path, Path] | None:
    """(the library's versioned URL file name, its script, its style) from the installed package."""
    spec = importlib.util.find_spec(CHART_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    static = Path(next(iter(spec.submodule_search_locations))) / "static"
    script, style = static / CHART_SCRIPT, static / CHART_STYLE
    if not (script.is_file() and style.is_file()):
        return None
    return f"uPlot-{importlib.metadata.version(CHART_DISTRIBUTION)}.js", script, style


class Assets:
    def __init__(self) -> None:
        self._cache: dict[str, Asset] = {}
        found = chart_files()
        # the library's script under its versioned URL (the pages' placeholder {{chart}}); its style inlined
        self._bundles = {found[0]: found[1]} if found else {}
        self.chart_urls = {"chart": f"/console/static/{found[0]}"} if found else {}
        self._chart_style = found[2].read_text() if found else ""
        names = list(self._bundles)
        # compressed once, at start-up and beside it, not by the first page that asks (0.1-0.3 s)
        threading.Thread(target=lambda: [self._load(n) for n in names], name="console-assets", daemon=True).start()

    def _load(self, name: str) -> Asset | None:
        asset = self._cache.get(name)
        if asset is not None:
            return asset
        bundle = self._bundles.get(name)
        if bundle is not None:
            body = bundle.read_bytes()
            asset = Asset(body, gzip.compress(body, 6), _TYPES[".js"], _etag(body), immutable=True)
        else:
            path = STATIC / name
            if "/" in name or name.startswith(".") or path.suffix not in _TYPES or not path.is_file():
                return None
            body = path.read_bytes()
            asset = Asset(body, None, _TYPES[path.suffix], _etag(body))
        self._cache[name] = asset
        return asset

    def _text(self, name: str) -> str:
        """A file of ``static/`` as text (read once, as every asset)."""
        asset = self._load(name)
        if asset is None:
            raise FileNotFoundError(STATIC / name)
        return asset.body.decode()

    def response(self, request: Request, name: str) -> Response:
        asset = self._load(name)
        if asset is None:
            return Response("Not found", status_code=404, media_type="text/plain")
        headers = {"ETag": asset.etag, "Cache-Control": "public, max-age=31536000, immutable" if asset.immutable
                   else "no-cache", **SECURITY_HEADERS}
        if request.headers.get("if-none-match") == asset.etag:
            return Response(status_code=304, headers=headers)
        body = asset.body
        if asset.gzipped is not None and "gzip" in request.headers.get("accept-encoding", ""):
            body, headers["Content-Encoding"] = asset.gzipped, "gzip"
            headers["Vary"] = "Accept-Encoding"
        return Response(body, media_type=asset.media_type, headers=headers)

    def page(self, name: str, values: dict[str, str]) -> Response:
        """An HTML page of ``static/`` with its ``{{key}}`` placeholders filled in (escaped)."""
        text = self._text(name)
        for key, file in INLINED.items():  # our own files, verbatim (not values)
            text = text.replace("{{" + key + "}}", self._text(file))
        text = text.replace("{{chart-css}}", self._chart_style)
        for key, value in {**values, **self.chart_urls}.items():
            text = text.replace("{{" + key + "}}", html.escape(value))
        return Response(text, media_type=_TYPES[".html"], headers={"Cache-Control": "no-store", **SECURITY_HEADERS})


def _etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:20] + '"'
