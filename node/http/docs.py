"""The API's OpenAPI document and interactive docs, served by the node itself.

The network is closed, so nothing comes from a CDN: Swagger UI's files come from the
`fastapi-offline` package and are served under /docs/static/, next to the page's own
start script (node/http/static/docs-init.js; the Content-Security-Policy runs no inline
script). The assets are public (they are Swagger UI's, the same for every node); the
page and `/openapi.json`, which describe this node's routes, open to every person's
role: operator, admin and auditor, by token or console session. A metrics token (a
scraper) does not read them.

The document covers the API routes of the HTTP listener: the service API (checks,
jobs), the admin and the ledger routes; console pages, /metrics and the health probes
(which declare themselves out of the schema) stay out.
"""
from __future__ import annotations

import html
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Request
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse
from starlette.routing import Mount

from node.core.service_config import Role
from node.http.auth import SESSION_COOKIE, Authenticator, Principal, csrf_token

READERS = (Role.OPERATOR, Role.ADMIN, Role.AUDITOR)
_OWN = Path(__file__).parent / "static"

_DESCRIPTION = """\
The HTTP API of one Shuqiao node.

* **Service API** (operator token): real-time checks of one applicant (`/v1/checks`) and
  batch jobs. Every POST needs an `Idempotency-Key` header (a fresh UUID per request; the
  same one when retrying).
* **Admin** (admin token): policy, datasets, partners' offers.
* **Ledger** (auditor token): heads, entries, inclusion and consistency proofs.
* `/metrics` (metrics or auditor token); `/healthz` and `/readyz` (no token) for load balancers.

Send `Authorization: Bearer <token>`. Errors are `{"detail": "..."}` and never repeat an
identifier or a value.
"""


def _assets() -> dict[str, tuple[Path, str]]:
    """The files under /docs/static/, by name (nothing else is served from there)."""
    import fastapi_offline
    dist = Path(fastapi_offline.__file__).parent / "static"
    return {"swagger-ui-bundle.js": (dist / "swagger-ui-bundle.js", "text/javascript"),
            "swagger-ui.css": (dist / "swagger-ui.css", "text/css"),
            "favicon.png": (dist / "favicon.png", "image/png"),
            "docs-init.js": (_OWN / "docs-init.js", "text/javascript")}


def openapi_document(app: FastAPI) -> dict:
    """The document of `app`'s routes and of the ledger app it mounts, built once per app."""
    cached = getattr(app.state, "openapi_document", None)
    if cached is not None:
        return cached
    from node.core.version import software_version
    routes = [r for r in app.routes if not isinstance(r, Mount)]
    ledger = getattr(app.state, "auditor_app", None)
    if ledger is not None:
        routes += list(ledger.routes)
    doc = get_openapi(title="Shuqiao node API", version=software_version(), description=_DESCRIPTION,
                      routes=routes)
    doc.setdefault("components", {})["securitySchemes"] = {
        "bearer": {"type": "http", "scheme": "bearer", "description": "A token of the node's [[http.tokens]]"}}
    doc["security"] = [{"bearer": []}]
    for path, operations in doc.get("paths", {}).items():  # the ledger app's routes carry no tag
        for operation in operations.values():
            if not operation.get("tags") and path.startswith("/v1/"):
                operation["tags"] = [path.split("/")[2]]
    app.state.openapi_document = doc
    return doc


def docs_router(auth: Authenticator) -> APIRouter:
    router = APIRouter(include_in_schema=False)
    assets = _assets()
    readers = Depends(auth.require(*READERS))

    @router.get("/openapi.json")
    def openapi(request: Request, principal: Principal = readers) -> JSONResponse:
        return JSONResponse(openapi_document(request.app))

    @router.get("/docs", response_class=HTMLResponse)
    def docs(request: Request, principal: Principal = readers) -> HTMLResponse:
        secret = request.cookies.get(SESSION_COOKIE) if principal.session else None
        return HTMLResponse(_page(csrf_token(secret) if secret else ""))

    @router.get("/docs/static/{name}")
    def asset(name: str) -> FileResponse:
        found = assets.get(name)
        if found is None:
            raise HTTPException(404, "no such file")
        path, media_type = found
        return FileResponse(path, media_type=media_type, headers={"Cache-Control": "public, max-age=86400"})

    return router


def _page(csrf: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Shuqiao node API</title>
<link rel="icon" type="image/png" href="/docs/static/favicon.png">
<link rel="stylesheet" href="/docs/static/swagger-ui.css">
</head>
<body>
<div id="swagger-ui" data-openapi="/openapi.json" data-csrf="{html.escape(csrf, quote=True)}"></div>
<script src="/docs/static/swagger-ui-bundle.js"></script>
<script src="/docs/static/docs-init.js"></script>
</body>
</html>
"""
