"""The agency admin's console pages against a real `shuqiao serve` over TLS: every page and
form refused to other roles and without CSRF; bad uploads refused with a reason and
nothing stored; registration, version actions and grant edits ledgered as the console
user; and one journey in a real browser."""
from __future__ import annotations

import io
import random
import re
import time
import tomllib
import zipfile

import pytest
import sqlalchemy as sa
import tomli_w

from node.ledger import decode
from node.ledger.http import new_token

from . import fixtures as fx
from .browser import browser, login, new_page, shot  # noqa: F401  (browser is a fixture)
from .test_console_e2e import ROLES, client, logged_in

pytestmark = pytest.mark.e2e
DS = "flexible_workers"
HEADER = ["公民身份号码", "缴费月数", "所属区"]


@pytest.fixture(scope="module")
def node(tmp_path_factory):
    root = tmp_path_factory.mktemp("console-admin")
    s = fx.build(root, registry_size=50, applicants=10)
    s.tokens = {}
    entries = []
    for role in ROLES:
        token, digest = new_token()
        s.tokens[role] = token
        entries.append({"name": f"{role}-desk", "digest": digest, "role": role})
    db = root / "hr.db"  # the agency's own business database, a named SQL source
    engine = sa.create_engine(f"sqlite:///{db}")
    with engine.begin() as conn:
        conn.execute(sa.text('CREATE TABLE workers ("公民身份号码" TEXT, "缴费月数" INTEGER)'))
        conn.execute(sa.text("INSERT INTO workers VALUES (:p, :m)"),
                     [{"p": p, "m": i % 60 + 1} for i, p in enumerate(fx.people(random.Random(9), 30))]
                     + [{"p": "not-an-id", "m": 1}])
    engine.dispose()
    s.fed.add_node("hrss", partners=[{"id": "fund"}], datasets=[
        {"name": DS, "description": "灵活就业人员登记", "grants": [{"partner": "fund", "purposes": [fx.PURPOSE]}]},
        {"name": "ungranted"}],
        extra={"http": {"listen": "127.0.0.1:0", "tokens": entries}, "service": {"max_upload_mib": 4},
               "sources": {"sql": [{"name": "hr-db", "description": "人社业务库", "url": f"sqlite:///{db}",
                                    "table": "workers"}]}})
    fx.start(s)
    s.base = f"https://127.0.0.1:{s.fed.nodes['hrss'].http_port}"
    yield s
    s.fed.close()


def registry_csv(rows: int, seed: int, bad: bool = True) -> bytes:
    """A GB18030 register as Excel in China saves it; with `bad`, four rows to reject."""
    rng = random.Random(seed)
    lines = [",".join(HEADER)]
    ids = fx.people(rng, rows)
    lines += [f"{p},{rng.randint(1, 60)},天宁区" for p in ids]
    if bad:
        wrong = ids[1][:-1] + ("0" if ids[1][-1] != "0" else "1")
        lines.insert(3, f"{wrong},12,钟楼区")                 # line 4: a wrong check digit
        lines.insert(6, ",7,新北区")                          # line 7: no identifier
        lines.insert(9, f"{ids[0]},3,武进区")                 # line 10: a repeated identifier
        lines.insert(12, "ABC,1,金坛区")                      # line 13: not an identifier
    return ("\r\n".join(lines) + "\r\n").encode("gb18030")


def versions(s) -> list[tuple[int, str]]:
    engine = sa.create_engine(f"sqlite:///{s.fed.nodes['hrss'].directory / 'node.db'}")
    with engine.connect() as conn:
        rows = conn.execute(sa.text("SELECT version, status FROM datasets WHERE name = :n ORDER BY version"),
                            {"n": DS}).all()
    engine.dispose()
    return [tuple(r) for r in rows]


def admin_entries(s) -> list:
    engine = sa.create_engine(f"sqlite:///{s.fed.nodes['hrss'].directory / 'node.db'}")
    with engine.connect() as conn:
        blobs = conn.execute(sa.text("SELECT entry FROM ledger_entries WHERE type = 'admin' ORDER BY idx")).scalars().all()
    engine.dispose()
    return [decode(b) for b in blobs]


def uploads_left(s) -> list:
    folder = s.fed.nodes["hrss"].directory / "console-uploads"
    return list(folder.iterdir()) if folder.exists() else []


def upload(c, csrf, content: bytes, filename: str = "登记表.csv", **fields):
    data = {"csrf": csrf, "source": "upload", "id_column": HEADER[0], "id_type": "cn_resident_id",
            "attributes": "缴费月数", "encoding": "auto", **fields}
    return c.post(f"/console/admin/datasets/{DS}/register", data=data, files={"file": (filename, content)})


def finished(c, location: str, timeout: float = 30) -> dict:
    task_id = location.rsplit("/", 1)[1]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = c.get(f"/console/admin/tasks/{task_id}/progress").json()
        if state["finished"]:
            return state
        time.sleep(0.2)
    raise AssertionError("the task did not finish")


PAGES = ["/console/admin/datasets", f"/console/admin/datasets/{DS}/register", f"/console/admin/datasets/{DS}/refresh",
         "/console/admin/grants", "/console/admin/grants/fund", "/console/admin/tasks/nothing",
         "/console/admin/tasks/nothing/progress", "/console/admin/tasks/nothing/rejects.csv"]
FORMS = [f"/console/admin/datasets/{DS}/versions/1/retire", f"/console/admin/datasets/{DS}/versions/1/purge",
         f"/console/admin/datasets/{DS}/rotate", f"/console/admin/datasets/{DS}/register",
         f"/console/admin/datasets/{DS}/refresh", f"/console/admin/grants/fund/{DS}",
         f"/console/admin/grants/fund/{DS}/revoke"]


@pytest.mark.parametrize("role", ["operator", "auditor", "metrics"])
def test_other_roles_are_refused_every_admin_page_and_form(node, role):
    before = (versions(node), len(admin_entries(node)))
    with logged_in(node, role) as (c, csrf):
        csrf = csrf or "0" * 64  # a metrics session sees no page, hence no form token
        for path in PAGES:
            assert c.get(path).status_code == 403, path
        for path in FORMS:
            r = c.post(path, data={"csrf": csrf, "partner": "", "purposes": "x", "id_column": HEADER[0]},
                       files={"file": ("a.csv", registry_csv(3, 1))} if path.endswith("register") else None)
            assert r.status_code == 403, path
    assert (versions(node), len(admin_entries(node))) == before


def test_without_a_session_pages_and_forms_redirect_to_login(node):
    with client(node) as c:
        for path in PAGES[:5] + FORMS:
            r = c.get(path) if path in PAGES else c.post(path, data={"csrf": "0" * 64})
            assert r.status_code == 303 and r.headers["location"].startswith("/console/login?next="), path


def test_forms_without_or_with_a_wrong_csrf_token_are_refused(node):
    before = (versions(node), len(admin_entries(node)))
    with logged_in(node, "admin") as (c, csrf):
        for token in (None, "0" * 64, csrf[:-1] + ("0" if csrf[-1] != "0" else "1")):
            extra = {} if token is None else {"csrf": token}
            assert c.post(f"/console/admin/datasets/{DS}/rotate", data={**extra, "partner": ""}).status_code == 403
            assert c.post(f"/console/admin/grants/fund/{DS}", data={**extra, "purposes": "x"}).status_code == 403
            r = c.post(f"/console/admin/datasets/{DS}/register", data={**extra, "id_column": HEADER[0]},
                       files={"file": ("a.csv", registry_csv(5, 2))})
            assert r.status_code == 403
    assert (versions(node), len(admin_entries(node))) == before and not uploads_left(node)


def _bomb() -> bytes:
    """An .xlsx whose worksheet unpacks ~1000:1 (a zip bomb in a workbook's clothes)."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("[Content_Types].xml", "<Types/>")
        z.writestr("xl/workbook.xml", "<workbook/>")
        z.writestr("xl/worksheets/sheet1.xml", "<sheetData>" + " " * (40 << 20) + "</sheetData>")
    return out.getvalue()


@pytest.mark.parametrize("case", ["utf16", "wrong_encoding", "bomb", "damaged_xlsx", "xls", "too_large", "no_column"])
def test_bad_uploads_get_a_clear_message_and_nothing_is_stored(node, case):
    before = (versions(node), len(admin_entries(node)))
    body, name, fields, expected = {
        "utf16": ("公民身份号码\n1\n".encode("utf-16"), "a.csv", {}, "UTF-16"),
        "wrong_encoding": (registry_csv(20, 3), "a.csv", {"encoding": "utf-8"}, "GB18030"),
        "bomb": (_bomb(), "a.xlsx", {}, "compressed more than 100:1"),
        "damaged_xlsx": (b"PK\x03\x04 not really a workbook", "a.xlsx", {}, "damaged"),
        "xls": (b"\xd0\xcf\x11\xe0", "a.xls", {}, ".xlsx"),
        "too_large": (b"x" * ((4 << 20) + 4096), "a.csv", {}, "4 MiB"),
        "no_column": (registry_csv(5, 4), "a.csv", {"id_column": "身份证"}, "身份证"),
    }[case]
    with logged_in(node, "admin") as (c, csrf):
        r = upload(c, csrf, body, name, **fields)
        if r.status_code == 303 and r.headers["location"].startswith("/console/admin/tasks/"):
            state = finished(c, r.headers["location"])  # found while reading: the task fails
            assert state["status"] == "failed"
            text = c.get(r.headers["location"]).text
        elif r.status_code == 303:  # cut off while streaming: back to the form, with the reason
            assert r.headers["location"].endswith("/register?error=too_large")
            text = c.get(r.headers["location"]).text
        else:
            assert r.status_code == 400
            text = r.text
    assert expected.lower() in text.lower(), text[:2000]
    assert ("未登记任何数据" in text or "上传大小" in text) and "Traceback" not in text
    assert (versions(node), len(admin_entries(node))) == before and not uploads_left(node)


def test_an_upload_without_a_declared_length_is_cut_off_at_the_limit(node):
    before = (versions(node), len(admin_entries(node)))
    with logged_in(node, "admin") as (c, csrf):
        boundary = "sqboundary"

        def body():  # chunked: the size is known only as it streams
            yield (f"--{boundary}\r\nContent-Disposition: form-data; name=\"csrf\"\r\n\r\n{csrf}\r\n"
                   f"--{boundary}\r\nContent-Disposition: form-data; name=\"id_column\"\r\n\r\n{HEADER[0]}\r\n"
                   f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.csv\"\r\n"
                   "Content-Type: text/csv\r\n\r\n").encode()
            for _ in range(5 * 16):
                yield b"1" * (64 << 10)
            yield f"\r\n--{boundary}--\r\n".encode()
        r = c.post(f"/console/admin/datasets/{DS}/register", content=body(),
                   headers={"content-type": f"multipart/form-data; boundary={boundary}"})
        assert r.status_code == 303 and r.headers["location"].endswith("/register?error=too_large")
        assert "4 MiB" in c.get(r.headers["location"]).text
    assert (versions(node), len(admin_entries(node))) == before and not uploads_left(node)


def test_registration_retire_purge_and_rotation_are_ledgered_as_the_console_user(node):
    with logged_in(node, "admin") as (c, csrf):
        r = upload(c, csrf, registry_csv(40, 5))
        assert r.status_code == 303
        state = finished(c, r.headers["location"])
        assert state["status"] == "done", state
        page = c.get(r.headers["location"]).text
        version = int(re.search(r'data-testid="new-version">v(\d+)<', page).group(1))
        lines = [int(x) for x in re.findall(r'<tr><td class="num">(\d+)</td>', page)]
        assert lines == [4, 7, 10, 13]
        assert "天宁区" not in page and "钟楼区" not in page and "ABC" not in page  # reasons, never values
        csv_text = c.get(r.headers["location"] + "/rejects.csv").text
        assert csv_text.lstrip("\ufeff").splitlines()[0] == "line,reason" and len(csv_text.splitlines()) == 5
        r = c.post(f"/console/admin/datasets/{DS}/versions/{version}/purge", data={"csrf": csrf})
        assert r.status_code == 409 and "retire it first" in r.text  # a refusal, with its reason
        r = c.post(f"/console/admin/datasets/{DS}/versions/{version}/retire", data={"csrf": csrf})
        assert r.status_code == 303 and f"已停用 {DS} 第 {version} 版" in c.get(r.headers["location"]).text
        assert f"已停用 {DS} 第" not in c.get(r.headers["location"]).text  # shown once
        assert 'class="alert ok"' not in c.get("/console/admin/datasets?done=forged").text
        assert c.post(f"/console/admin/datasets/{DS}/versions/{version}/purge", data={"csrf": csrf}).status_code == 303
        r = c.post(f"/console/admin/datasets/{DS}/rotate", data={"csrf": csrf, "partner": "fund"})
        assert finished(c, r.headers["location"])["status"] == "done"
    assert (version, "purged") in versions(node)
    mine = [(e.action, e.details.get("version")) for e in admin_entries(node) if e.actor == "console:admin-desk"]
    assert ("dataset_registered", version) in mine and ("dataset_retired", version) in mine
    assert ("dataset_purged", version) in mine and any(a == "key_rotated" or a.startswith("epoch") for a, _ in mine)


def test_registration_from_a_named_sql_source_and_every_word_translated(node):
    with logged_in(node, "admin") as (c, csrf):
        r = c.post(f"/console/admin/datasets/{DS}/register", data={
            "csrf": csrf, "source": "sql", "sql_source": "hr-db", "id_column": HEADER[0],
            "id_type": "cn_resident_id", "attributes": "缴费月数"})
        assert r.status_code == 303 and finished(c, r.headers["location"])["status"] == "done"
        task = r.headers["location"]
        page = c.get(task).text
        assert re.search(r'data-testid="reject-count">1<', page) and "含有无效字符" in page
        assert "not-an-id" not in page
        for lang in ("zh", "en"):
            c.cookies.set("sq_lang", lang)
            for path in (*PAGES[:5], task):
                text = c.get(path).text
                missing = re.findall(r">[^<]*\b((?:adm|reg|gr|task|kind)\.[a-z_.]+)", text)
                assert not missing, (lang, path, missing)
        c.cookies.set("sq_lang", "zh")
    assert any(e.action == "dataset_registered" and e.details.get("source") == "sql"
               and e.actor == "console:admin-desk" for e in admin_entries(node))


def test_a_refresh_adds_and_removes_and_reports_what_it_could_not_apply(node):
    present = fx.people(random.Random(9), 30)  # the SQL source's people, registered above
    fresh = [p for p in fx.people(random.Random(21), 3) if p not in present]
    add = ("\r\n".join([f"{HEADER[0]},{HEADER[1]}", *(f"{p},5" for p in fresh), f"{present[0]},9"]) + "\r\n")
    remove = f"{HEADER[0]}\r\n{present[1]}\r\n"
    with logged_in(node, "admin") as (c, csrf):
        base = max(v for v, status in versions(node) if status == "active")
        r = c.post(f"/console/admin/datasets/{DS}/refresh", data={"csrf": csrf, "id_column": HEADER[0]},
                   files={"add": ("新增.csv", add.encode("gb18030")), "remove": ("删除.csv", remove.encode())})
        assert r.status_code == 303 and finished(c, r.headers["location"])["status"] == "done"
        page = c.get(r.headers["location"]).text
    assert f"基于第 {base} 版：新增 {len(fresh)} 行，删除 1 行" in page
    assert "新增行：该标识已在数据集中" in page and present[0] not in page
    assert (base + 1, "active") in versions(node) and not uploads_left(node)


def test_a_grant_edit_is_refused_while_the_file_holds_changes_not_in_force(node):
    path = node.fed.nodes["hrss"].config_path
    original = path.read_bytes()
    edited = tomllib.loads(original.decode())
    edited["partners"][0]["display_name"] = "公积金中心"
    path.write_bytes(tomli_w.dumps(edited).encode())
    try:
        with logged_in(node, "admin") as (c, csrf):
            r = c.post(f"/console/admin/grants/fund/{DS}", data={"csrf": csrf, "purposes": fx.PURPOSE,
                                                                "kinds": ["membership"]})
            assert r.status_code == 409 and "not in force" in r.text
            assert path.read_bytes() == tomli_w.dumps(edited).encode()  # the refused edit wrote nothing
    finally:
        path.write_bytes(original)


def test_a_grant_edit_is_validated_applied_live_and_ledgered(node):
    path = node.fed.nodes["hrss"].config_path
    form = {"purposes": f"{fx.PURPOSE} | 《住房公积金管理条例》", "kinds": ["membership"], "min_elements": "1",
            "max_elements": "1000", "daily_elements": "5000"}
    with logged_in(node, "admin") as (c, csrf):
        before = path.read_bytes()
        r = c.post(f"/console/admin/grants/fund/{DS}", data={"csrf": csrf, **form, "min_elements": "2000"})
        assert r.status_code == 400 and "min_elements must not exceed max_elements" in r.text
        r = c.post(f"/console/admin/grants/fund/{DS}", data={"csrf": csrf, **form, "daily_elements": "many"})
        assert r.status_code == 400 and "must be a whole number" in r.text
        assert path.read_bytes() == before
        r = c.post(f"/console/admin/grants/fund/{DS}", data={"csrf": csrf, **form})
        assert r.status_code == 303 and "outcome=applied" in r.headers["location"]
        assert "已生效" in c.get(r.headers["location"]).text
        policy = c.get("/v1/admin/policy", headers={"authorization": f"Bearer {node.tokens['admin']}"}).json()
    grant = next(d for d in policy if d["name"] == DS)["grants"][0]
    assert grant["daily_elements"] == 5000 and grant["max_elements"] == 1000
    saved = tomllib.loads(path.read_text())
    assert next(d for d in saved["datasets"] if d["name"] == DS)["grants"][0]["daily_elements"] == 5000
    assert path.with_name(path.name + ".bak").read_bytes() == before
    changed = [e for e in admin_entries(node) if e.action == "policy_changed"]
    assert changed[-1].actor == "console:admin-desk" and changed[-1].details["trigger"] == "console"
    with logged_in(node, "admin") as (c, csrf):  # a grant added on another dataset, then revoked
        r = c.post("/console/admin/grants/fund/ungranted", data={"csrf": csrf, "purposes": "statistics",
                                                                "kinds": ["membership"]})
        assert r.status_code == 303 and "outcome=applied" in r.headers["location"]
        r = c.post("/console/admin/grants/fund/ungranted/revoke", data={"csrf": csrf})
        assert r.status_code == 303 and "outcome=revoked" in r.headers["location"]
        assert "已撤销" in c.get(r.headers["location"]).text
        r = c.post("/console/admin/grants/fund/ungranted/revoke", data={"csrf": csrf})
        assert r.status_code == 409 and "grants nothing" in r.text
        policy = c.get("/v1/admin/policy", headers={"authorization": f"Bearer {node.tokens['admin']}"}).json()
    assert next(d for d in policy if d["name"] == "ungranted")["grants"] == []
    assert len([e for e in admin_entries(node) if e.action == "policy_changed"]) == len(changed) + 2


def test_admin_journey_in_a_browser(node, browser, tmp_path):  # noqa: F811
    """Upload a GB18030 register with bad rows, watch it register, read the rejects, edit a grant."""
    big = tmp_path / "灵活就业人员登记表.csv"
    big.write_bytes(registry_csv(30_000, 11))
    page = new_page(browser)
    login(page, node.base, node.tokens["admin"])
    page.get_by_role("link", name="数据集管理").click()
    page.get_by_role("link", name="登记新版本").first.click()
    bomb = tmp_path / "登记表.xlsx"
    bomb.write_bytes(_bomb())
    page.get_by_label("数据文件（CSV 或 .xlsx）").set_input_files(str(bomb))
    page.get_by_label("身份标识列名").fill(HEADER[0])
    page.get_by_role("button", name="开始登记").click()
    refusal = page.get_by_role("alert")
    assert "未登记任何数据" in refusal.inner_text() and "登记表.xlsx" in refusal.inner_text()
    shot(page, "console_admin", "0-refused-upload")
    page.get_by_label("数据文件（CSV 或 .xlsx）").set_input_files(str(big))
    page.get_by_label("身份标识列名").fill(HEADER[0])
    page.get_by_label("标识类型").select_option("cn_resident_id")
    page.get_by_label("保留的属性列（以逗号分隔）").fill("缴费月数")
    shot(page, "console_admin", "1-register-form")
    page.get_by_role("button", name="开始登记").click()
    page.wait_for_url("**/console/admin/tasks/**")
    if page.locator("progress").count():  # a slow machine may show it, a fast one the result
        page.wait_for_timeout(1500)  # a poll or two
        shot(page, "console_admin", "2-progress")
    page.get_by_test_id("new-version").wait_for(timeout=45_000)
    assert page.get_by_test_id("reject-count").inner_text() == "4"
    rejects = page.locator("table.rejects tbody tr")
    assert rejects.count() == 4 and rejects.first.locator("td").first.inner_text() == "4"
    assert "check digit" in rejects.first.inner_text() or "校验" in rejects.first.inner_text()
    shot(page, "console_admin", "3-version-and-rejects")
    version = page.get_by_test_id("new-version").inner_text()
    page.get_by_role("link", name="返回数据集列表").first.click()
    assert page.get_by_test_id(f"version-{DS}-{version[1:]}").get_by_text("当前服务").is_visible()
    shot(page, "console_admin", "4-datasets")
    page.get_by_role("link", name="授权与策略").click()
    shot(page, "console_admin", "4-grants")
    page.get_by_role("link", name="编辑授权").first.click()
    grant = page.locator(f"#grant-{DS}")
    grant.get_by_label("月配额（滚动 30 天）").focus()  # by keyboard: type, then Enter submits
    page.keyboard.press("Control+A")
    page.keyboard.type("90000")
    page.keyboard.press("Enter")
    page.get_by_text("已生效").wait_for()
    assert page.locator(f"#grant-{DS}").get_by_label("月配额（滚动 30 天）").input_value() == "90000"
    shot(page, "console_admin", "5-grant-applied")
    page.get_by_role("link", name="English").click()
    assert page.get_by_role("button", name="Validate and apply").first.is_visible()
    shot(page, "console_admin", "5-grant-en")
    page.get_by_role("link", name="中文").click()
    page.set_viewport_size({"width": 1920, "height": 1080})
    page.goto(f"{node.base}/console/admin/datasets")
    shot(page, "console_admin", "6-datasets-1920")
    row = page.get_by_test_id(f"version-{DS}-{version[1:]}")
    page.once("dialog", lambda d: d.dismiss())  # a destructive action asks first: "no" does nothing
    row.get_by_role("button", name="停用").click()
    page.wait_for_timeout(300)  # a submission would have navigated by now
    assert row.get_by_text("当前服务").is_visible() and f"已停用 {DS} 第" not in page.locator("main").inner_text()
    page.once("dialog", lambda d: d.accept())
    row.get_by_role("button", name="停用").click()
    page.get_by_text(f"已停用 {DS} 第 {version[1:]} 版").wait_for()
    assert page.get_by_test_id(f"version-{DS}-{version[1:]}").get_by_text("已停用").is_visible()
    page.context.close()


def test_quota_use_shows_what_a_partner_asked(node, tmp_path):
    if not any(status == "active" for _, status in versions(node)):
        fx.register(node)  # run alone: a version to ask about
    r = fx.query(node, tmp_path / "out.csv")  # the fund centre asks about its applicants
    assert r.returncode == 0, r.stderr
    with logged_in(node, "admin") as (c, _):
        page = c.get("/console/admin/grants/fund").text
        overview = c.get("/console/admin/grants").text
    asked = len(node.applicants)
    used = re.findall(r'<td>近 24 小时</td><td class="num">([\d,]+)</td>\s*<td class="num">([^<]+)</td>', page)
    assert used and used[0] == (f"{asked:,}", "5,000"), used
    assert f"近 24 小时 {asked:,}/5,000" in overview
    with client(node) as c:
        api = c.get("/v1/admin/usage", params={"partner": "fund"},
                    headers={"authorization": f"Bearer {node.tokens['admin']}"}).json()
        assert c.get("/v1/admin/usage", headers={"authorization": f"Bearer {node.tokens['auditor']}"}).status_code == 403
    daily = next(w for w in next(u for u in api if u["dataset"] == DS)["windows"] if w["name"] == "daily")
    assert daily == {"name": "daily", "used": asked, "limit": 5000}
