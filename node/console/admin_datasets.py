"""The agency admin's dataset pages: every declared dataset with its versions, and the
version actions of `shuqiao dataset …` — retire, purge, rotate the key — as POST forms.

Each action calls the CLI's own function (node/datasets/registration.py, epochs.py),
which ledgers it on the action's transaction; the console user acts as
`console:<token name>` (node/runtime/admin_log.acting_as). A refusal (a version that is
not active, a purge of a version not retired) is shown on the page with its reason.
"""
from __future__ import annotations

from urllib.parse import urlencode

from fastapi import Depends, FastAPI, Form, Request
from fastapi.responses import RedirectResponse, Response

from node.console.admin_common import Flash, actor_of, local_time, stage_key, words
from node.console.admin_tasks import Outcome, TaskBusy, Tasks
from node.console.pages import render
from node.core.errors import InvalidInput
from node.core.service_config import Role
from node.http.auth import Authenticator, Principal
from node.runtime.admin_log import acting_as
from node.runtime.context import NodeContext

WORDS = words()
BASE = "/console/admin/datasets"


def install(app: FastAPI, ctx: NodeContext, auth: Authenticator, tasks: Tasks) -> None:
    # Long by design: the routes below are short closures over the context and the roles;
    # this function is their list, in the order a reader meets them on the page.
    admin = auth.require(Role.ADMIN)
    flash = Flash()

    def page(request: Request, principal: Principal, *, status: int = 200, error: str | None = None,
             message: str | None = None) -> Response:
        from node.datasets.registration import list_versions
        from node.keys.workers import current_epoch
        cfg = ctx.config
        with ctx.engine.connect() as conn:
            versions = list_versions(conn)
            epochs = {(d.name, g.partner): current_epoch(conn, d.name, g.partner)
                      for d in cfg.datasets for g in d.grants}
        by_name = {d.name: [] for d in cfg.datasets}
        for v in versions:
            by_name.setdefault(v.name, []).append(v)
        return render(request, "admin_datasets.html", principal, words=WORDS, status_code=status,
                      datasets=[(name, cfg.dataset(name), list(reversed(vs))) for name, vs in by_name.items()],
                      epochs=epochs, tasks=tasks.recent()[:10], stage_key=stage_key,
                      local=local_time(cfg.service.console_timezone), zone=cfg.service.console_timezone,
                      error=error, message=message)

    @app.get(BASE, include_in_schema=False)
    def datasets(request: Request, principal: Principal = Depends(admin), done: str = ""):
        return page(request, principal, message=flash.take(principal.name, done) if done else None)

    def announced(principal: Principal, key: str, **values) -> RedirectResponse:
        return RedirectResponse(f"{BASE}?" + urlencode({"done": flash.put(principal.name, (key, values))}),
                                status_code=303)

    @app.post(BASE + "/{name}/versions/{version}/retire", include_in_schema=False)
    def retire_version(request: Request, name: str, version: int, principal: Principal = Depends(admin)):
        from node.datasets.registration import retire
        try:
            with acting_as(actor_of(principal)):
                retire(ctx, name, version)
        except InvalidInput as exc:
            return page(request, principal, status=409, error=str(exc))
        return announced(principal, "adm.msg.retired", name=name, version=version)

    @app.post(BASE + "/{name}/versions/{version}/purge", include_in_schema=False)
    def purge_version(request: Request, name: str, version: int, principal: Principal = Depends(admin)):
        from node.datasets.registration import purge
        try:
            with acting_as(actor_of(principal)):
                rows = purge(ctx, name, version)
        except InvalidInput as exc:
            return page(request, principal, status=409, error=str(exc))
        return announced(principal, "adm.msg.purged", name=name, version=version, rows=f"{rows:,}")

    @app.post(BASE + "/{name}/rotate", include_in_schema=False)
    def rotate_key(request: Request, name: str, partner: str = Form(""),
                   principal: Principal = Depends(admin)):
        from node.datasets.epochs import RotationError, rotate
        declared = ctx.config.dataset(name)
        if declared is None:
            return page(request, principal, status=404, error=f"dataset {name!r} is not declared in the node config")
        chosen = partner or None

        def work(task) -> Outcome:
            done = rotate(ctx, name, chosen, progress=task.progress)
            return Outcome(summary={"epochs": [(r.partner, r.epoch, r.rows) for r in done],
                                    "grace_days": declared.grace_days})
        try:
            if chosen is not None and chosen not in {g.partner for g in declared.grants}:
                raise RotationError(f"partner {chosen!r} has no grant on dataset {name!r}")
            task = tasks.start("rotate", name, principal.name, work)
        except (TaskBusy, RotationError) as exc:
            return page(request, principal, status=409, error=str(exc))
        return RedirectResponse(f"/console/admin/tasks/{task.id}", status_code=303)

