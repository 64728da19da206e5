"""The web page, and the two small routes only it needs:

    GET /                      the page (web/index.html); /static/... its script and styles
    GET /api/settings          the settings the server runs with (read-only)
    GET /api/audit             audit reports (HTML files under <data dir>/audit/), newest first;
                               only to the configured user, who ran `anima audit`
    GET /api/audit/{name}      one report

The page is three static files, plain ES module + CSS, with no framework and no build
step: nothing to install, nothing fetched from a CDN, and every file is what runs. It
is a client of the JSON API like any other, sending the user's key as
`Authorization: Bearer` from sessionStorage (never in a URL). Pages are served with a
Content-Security-Policy that allows this origin's own script only.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

from fastapi import Depends, FastAPI
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles

from anima.config import data_dir
from anima.errors import NotFound

WEB = Path(__file__).parent / "web"
# Reports may carry inline styles and SVG charts; no script runs, here or in a report.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; frame-src 'self'; "
    "base-uri 'none'; form-action 'self'; frame-ancestors 'self'"
)


def mount(app: FastAPI, server, user: Callable[..., str]) -> None:
    """`server`: the app's Server; `user`: its auth dependency."""

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html", headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})

    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.get("/api/settings")
    def api_settings(who: str = Depends(user)) -> dict:
        config = server.container(who).config
        return {
            "backend": config.backend,
            "model": server.chat_model.name,
            "embedder": server.embedder.name,
            "privacy": {"remote": config.privacy.remote, "redact": config.privacy.redact},
            "proactive": {"quiet_hours": config.proactive.quiet_hours},
            "editable": False,  # set in config.toml or ANIMA_* (`anima config show`), then restart
        }

    def reports(who: str) -> dict[str, Path]:
        """`anima audit` saves its reports as the configured user (who runs the server), and
        they quote replies made with that user's data: no other user sees them."""
        root = (server.data_dir or data_dir()) / "audit"
        found = (
            sorted(root.rglob("*.html"), key=lambda p: p.stat().st_mtime, reverse=True)
            if root.is_dir() and who == server.config.user
            else []
        )
        return {p.relative_to(root).as_posix(): p for p in found}

    @app.get("/api/audit")
    def api_audit(who: str = Depends(user)) -> list[dict]:
        return [
            {
                "name": name,
                "size": p.stat().st_size,
                "modified": datetime.fromtimestamp(p.stat().st_mtime, timezone.utc).isoformat(),
            }
            for name, p in reports(who).items()
        ]

    @app.get("/api/audit/{name:path}", response_class=HTMLResponse)
    def api_audit_report(name: str, who: str = Depends(user)) -> HTMLResponse:
        path = reports(who).get(name)  # only a listed file: no path tricks
        if path is None:
            raise NotFound(f"no audit report '{name}'", "GET /api/audit lists them")
        return HTMLResponse(
            path.read_text(encoding="utf-8", errors="replace"), headers={"Content-Security-Policy": "sandbox; " + CSP}
        )
