"""Rendering a console page: the template, the caller's language, role, CSRF token and menu.

Words live beside the pages that use them (`WORDS` dicts: {"zh": {...}, "en": {...}});
`t(key)` in a template looks in the page's words, then in the console's common words here,
and shows the key itself if neither has it (a missing translation is visible, not fatal).
"""
from __future__ import annotations

from pathlib import Path

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from node.core.service_config import Role
from node.http.auth import SESSION_COOKIE, Principal, csrf_token

HERE = Path(__file__).parent
LANG_COOKIE = "sq_lang"
LANGS = ("zh", "en")

COMMON = {
    "zh": {"product": "数桥", "tagline": "数据可用不可见", "logout": "退出登录", "language": "English",
           "overview": "概览", "role.operator": "核验经办", "role.admin": "数据管理", "role.auditor": "审计",
           "role.metrics": "监控", "signed_in_as": "当前用户", "menu": "导航", "skip": "跳到正文",
           "back": "返回", "submit": "提交", "cancel": "取消", "download": "下载", "none": "无",
           "error": "出错了", "next": "下一页", "previous": "上一页", "page": "第 {n} 页"},
    "en": {"product": "Shuqiao", "tagline": "Data usable but never visible", "logout": "Log out",
           "language": "中文", "overview": "Overview", "role.operator": "Operator", "role.admin": "Admin",
           "role.auditor": "Auditor", "role.metrics": "Monitoring", "signed_in_as": "Signed in as",
           "menu": "Navigation", "skip": "Skip to content", "back": "Back", "submit": "Submit",
           "cancel": "Cancel", "download": "Download", "none": "None", "error": "Something went wrong",
           "next": "Next page", "previous": "Previous page", "page": "Page {n}"},
}

# The menu: (path, word key, roles that see it). Pages add their entries with `menu_item`.
MENU: list[tuple[str, str, frozenset[Role]]] = [
    ("/console/", "overview", frozenset({Role.OPERATOR, Role.ADMIN, Role.AUDITOR})),
]
_MENU_WORDS: dict[str, dict[str, str]] = {"zh": {}, "en": {}}


def menu_item(path: str, words: dict[str, str], *roles: Role) -> None:
    """Add a menu entry (`words`: {"zh": ..., "en": ...}) shown to `roles`, in call order."""
    key = "menu:" + path
    if all(p != path for p, _, _ in MENU):
        MENU.append((path, key, frozenset(roles)))
    for lang in LANGS:
        _MENU_WORDS[lang][key] = words[lang]


templates = Jinja2Templates(directory=str(HERE / "templates"))


def language(request: Request) -> str:
    lang = request.cookies.get(LANG_COOKIE, "zh")
    return lang if lang in LANGS else "zh"


def translator(lang: str, words: dict[str, dict[str, str]] | None):
    page = (words or {}).get(lang, {})

    def t(key: str, **values) -> str:
        text = page.get(key) or COMMON[lang].get(key) or _MENU_WORDS[lang].get(key) or key
        return text.format(**values) if values else text
    return t


def render(request: Request, template: str, principal: Principal | None, *,
           words: dict[str, dict[str, str]] | None = None, status_code: int = 200, **context) -> HTMLResponse:
    """A page for `principal` (None: the login page) in the caller's language."""
    lang = language(request)
    secret = request.cookies.get(SESSION_COOKIE)
    menu = [(path, key) for path, key, roles in MENU if principal and principal.role in roles]
    return templates.TemplateResponse(request, template, {
        "lang": lang, "t": translator(lang, words), "principal": principal, "menu": menu,
        "csrf": csrf_token(secret) if secret and principal else "", "path": request.url.path,
        **context}, status_code=status_code)
