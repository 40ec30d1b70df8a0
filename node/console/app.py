"""The console's frame: static assets, login and logout, the language switch, error pages.

Login takes the holder's token once (a password field), checks it like a bearer token and
opens a session (node/http/auth.py): the cookie is HttpOnly, SameSite=Strict and Secure
whenever the listener speaks TLS. The login form itself is protected by a double-submit
nonce, so another site cannot log a browser in under its own token. Pages of each role
live in their own modules and are installed here (`install`), in menu order.
"""
from __future__ import annotations

import hmac
import secrets
from urllib.parse import quote

from fastapi import FastAPI, Form, Request
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from node.console.pages import HERE, LANG_COOKIE, LANGS, render
from node.http.auth import SESSION_COOKIE, Authenticator
from node.runtime.context import NodeContext

LOGIN_COOKIE = "sq_login"
WORDS = {
    "zh": {"login.title": "登录", "login.token": "访问令牌", "login.hint": "请输入管理员为您签发的访问令牌。",
           "login.submit": "登录", "login.failed": "令牌无效或已撤销，请核对后重试。",
           "login.expired": "登录表单已过期，请重新提交。", "login.slow": "尝试次数过多，请稍后再试。",
           "denied.title": "无权访问", "denied.text": "您的角色无权使用此页面。",
           "notfound.title": "页面不存在"},
    "en": {"login.title": "Log in", "login.token": "Access token",
           "login.hint": "Enter the access token your administrator issued to you.", "login.submit": "Log in",
           "login.failed": "The token is not valid or has been revoked; check it and try again.",
           "login.expired": "The login form expired; submit it again.",
           "login.slow": "Too many attempts; try again later.",
           "denied.title": "Not allowed", "denied.text": "Your role may not use this page.",
           "notfound.title": "Page not found"},
}


def safe_next(target: str | None) -> str:
    """A redirect target inside the console only (no open redirect)."""
    if target and target.startswith("/console/") and not target.startswith("/console//") and "\\" not in target:
        return target
    return "/console/"


def install(app: FastAPI, ctx: NodeContext, auth: Authenticator) -> None:
    """Add the console to the node's HTTP app (an extension of node/http/app.create_app)."""
    # Long by design: the routes below are short closures over the context and the roles;
    # this function is their list, in the order a reader meets them on the page.
    from node.console import auditor_charts, auditor_ledger, operator, operator_check, overview
    secure = ctx.config.http.tls
    app.mount("/console/static", StaticFiles(directory=str(HERE / "static")), name="console-static")

    @app.exception_handler(StarletteHTTPException)
    async def pages_or_json(request: Request, exc: StarletteHTTPException) -> Response:
        path = request.url.path
        if not path.startswith("/console") or path.startswith("/console/static/"):
            return await http_exception_handler(request, exc)
        if exc.status_code == 401:
            return RedirectResponse(f"/console/login?next={quote(path)}", status_code=303)
        title = {403: "denied.title", 404: "notfound.title"}.get(exc.status_code, "error")
        return render(request, "error.html", None, words=WORDS, status_code=exc.status_code,
                      title=title, detail=str(exc.detail))

    @app.get("/console", include_in_schema=False)
    def root() -> Response:
        return RedirectResponse("/console/", status_code=303)

    @app.get("/console/login", include_in_schema=False)
    def login_page(request: Request, next: str = "/console/") -> Response:
        return _login_form(request, next)

    @app.post("/console/login", include_in_schema=False)
    def login(request: Request, token: str = Form(""), nonce: str = Form(""), next: str = Form("/console/")):
        expected = request.cookies.get(LOGIN_COOKIE, "")
        if not expected or not hmac.compare_digest(expected.encode(), nonce.encode()):
            return _login_form(request, next, "login.expired", 400)
        client = request.client.host if request.client else "unknown"
        if auth.rates.take(f"login:{client}", 20):
            return _login_form(request, next, "login.slow", 429)
        found = auth.by_token(token.strip() or None)
        if found is None:
            return _login_form(request, next, "login.failed", 401)
        response = RedirectResponse(safe_next(next), status_code=303)
        response.set_cookie(SESSION_COOKIE, auth.open_session(found[0]), httponly=True, secure=secure,
                            samesite="strict", path="/")
        response.delete_cookie(LOGIN_COOKIE, path="/console/login")
        return response

    @app.post("/console/logout", include_in_schema=False)
    async def logout(request: Request) -> Response:
        await auth.authenticate(request)  # a session and its CSRF token: no logout by another site
        auth.close_session(request.cookies.get(SESSION_COOKIE))
        response = RedirectResponse("/console/login", status_code=303)
        response.delete_cookie(SESSION_COOKIE, path="/")
        return response

    @app.get("/console/lang", include_in_schema=False)
    def switch_language(to: str, next: str = "/console/") -> Response:
        response = RedirectResponse(safe_next(next), status_code=303)
        if to in LANGS:
            response.set_cookie(LANG_COOKIE, to, max_age=365 * 86400, secure=secure, samesite="strict", path="/")
        return response

    overview.install(app, ctx, auth)
    operator.install(app, ctx, auth)
    operator_check.install(app, ctx, auth)
    install_admin(app, ctx, auth)
    auditor_ledger.install(app, ctx, auth)
    auditor_charts.install(app, ctx, auth)


def install_admin(app: FastAPI, ctx: NodeContext, auth: Authenticator) -> None:
    """The agency admin's pages: datasets and their versions, registration, grants."""
    from node.console import admin_datasets, admin_grants, admin_register
    from node.console.admin_tasks import Tasks
    from node.console.pages import menu_item
    from node.core.service_config import Role
    tasks = Tasks(ctx.clock)
    admin_datasets.install(app, ctx, auth, tasks)
    admin_register.install(app, ctx, auth, tasks)
    admin_grants.install(app, ctx, auth)
    menu_item(admin_datasets.BASE, {"zh": "数据集管理", "en": "Datasets"}, Role.ADMIN)
    menu_item(admin_grants.BASE, {"zh": "授权与策略", "en": "Grants and policy"}, Role.ADMIN)


def _login_form(request: Request, next: str, error: str | None = None, status: int = 200) -> Response:
    nonce = secrets.token_urlsafe(24)
    response = render(request, "login.html", None, words=WORDS, status_code=status, nonce=nonce,
                      next=safe_next(next), error=error)
    response.set_cookie(LOGIN_COOKIE, nonce, httponly=True, secure=request.url.scheme == "https",
                        samesite="strict", path="/console/login", max_age=3600)
    return response
