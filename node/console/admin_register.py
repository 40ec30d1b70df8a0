"""Registering a dataset version from the console: an uploaded CSV (UTF-8 or GB18030) or
.xlsx, or a named SQL source (`[[sources.sql]]`); refreshing one by additions and
removals; and the task page that shows the progress, then the version and its rejects.

The file is opened here, before any work starts, the way `shuqiao dataset add` opens it
(adapters: encoding detection, the workbook guard against bombs, the node's `[sources]`
bounds), so a file in the wrong encoding or a damaged workbook is refused on the form,
with the reason. The registration itself is the CLI's (`register`, `refresh`), on a
background thread; it stores everything in one transaction or nothing at all. Rejected
rows are shown as the CLI shows them: line and reason, never a value.
"""
from __future__ import annotations

import csv
import io
from pathlib import Path

from fastapi import Depends, FastAPI, File, Form, Request, UploadFile
from fastapi.responses import RedirectResponse, Response
from starlette.concurrency import run_in_threadpool

from adapters import IdType, SourceError, open_csv, open_source, open_sql, open_xlsx

from node.console.admin_common import reason_text, stage_key, words
from node.console.admin_tasks import Outcome, TaskBusy, Tasks
from node.console.pages import language, render, translator
from node.console.uploads import UploadTooLarge, clear_leftovers, keep_upload, limit_uploads, upload_dir
from node.core.errors import ConfigError, InvalidInput
from node.core.service_config import Role
from node.http.auth import Authenticator, Principal
from node.runtime.context import NodeContext

SUFFIXES = {".csv": "csv", ".txt": "csv", ".xlsx": "xlsx"}
ENCODINGS = ("auto", "gb18030", "utf-8")
SHOWN_REJECTS = 200
WORDS = words({
    "zh": {"reg.title": "登记数据集新版本", "reg.source": "数据来源", "reg.upload": "上传文件", "reg.sql": "已配置的数据库来源",
           "reg.file": "数据文件（CSV 或 .xlsx）", "reg.file_hint": "CSV 可为 GB18030（Excel 中文版“CSV（逗号分隔）”）或 UTF-8；大小不超过 {mib} MiB。",
           "reg.encoding": "CSV 编码", "reg.encoding.auto": "自动识别", "reg.sheet": "工作表（留空则为第一张）",
           "reg.sql_source": "数据库来源", "reg.no_sql": "本节点未配置数据库来源（[[sources.sql]]）。",
           "reg.id_column": "身份标识列名", "reg.columns": "数据列", "reg.id_type": "标识类型", "reg.attributes": "保留的属性列（以逗号分隔）",
           "reg.strict": "有任何拒收行即放弃登记", "reg.submit": "开始登记",
           "reg.idtype.cn_resident_id": "居民身份证号码", "reg.idtype.cn_uscc": "统一社会信用代码",
           "reg.idtype.phone_cn": "手机号码", "reg.idtype.custom": "自定义",
           "reg.too_large": "文件超过本节点允许的上传大小（{mib} MiB），未保存任何内容。",
           "reg.nothing": "未登记任何数据", "reg.refresh_title": "增量更新数据集",
           "reg.add": "新增行文件（CSV 或 .xlsx）", "reg.remove": "删除名单文件（CSV 或 .xlsx，仅需标识列）",
           "reg.refresh_hint": "新版本 = 当前版本 + 新增行 − 删除名单；合作方只同步差异。",
           "reg.refresh_submit": "开始更新", "task.title": "任务进度", "task.result": "登记结果",
           "task.new_version": "新版本", "task.rows": "有效行数", "task.rejects": "拒收行",
           "task.no_rejects": "没有拒收行。", "task.line": "行号", "task.reason": "原因",
           "task.rejects_more": "仅显示前 {n} 行；完整清单请下载。", "task.download": "下载拒收清单（CSV）",
           "task.failed": "任务失败", "task.back_form": "返回表单", "task.back_list": "返回数据集列表",
           "task.epochs": "{partner}：密钥周期 {epoch}（重建 {rows} 个标签）；上一周期仍可应答 {grace} 天",
           "task.base": "基于第 {base} 版：新增 {added} 行，删除 {removed} 行"},
    "en": {"reg.title": "Register a new version", "reg.source": "Source", "reg.upload": "Upload a file",
           "reg.sql": "A configured database source", "reg.file": "Data file (CSV or .xlsx)",
           "reg.file_hint": "CSV in GB18030 (Excel's \"CSV (comma delimited)\" in China) or UTF-8; at most {mib} MiB.",
           "reg.encoding": "CSV encoding", "reg.encoding.auto": "detect", "reg.sheet": "Worksheet (empty: the first)",
           "reg.sql_source": "Database source", "reg.no_sql": "This node has no database source configured ([[sources.sql]]).",
           "reg.id_column": "Identifier column", "reg.columns": "Columns", "reg.id_type": "Identifier type",
           "reg.attributes": "Attribute columns to keep (comma-separated)",
           "reg.strict": "Abort if any row is rejected", "reg.submit": "Register",
           "reg.idtype.cn_resident_id": "Resident ID number", "reg.idtype.cn_uscc": "Unified social credit code",
           "reg.idtype.phone_cn": "Mobile number", "reg.idtype.custom": "Custom",
           "reg.too_large": "The file is larger than this node accepts ({mib} MiB); nothing was kept.",
           "reg.nothing": "Nothing was registered", "reg.refresh_title": "Refresh a dataset",
           "reg.add": "Rows to add (CSV or .xlsx)", "reg.remove": "Identifiers to remove (CSV or .xlsx)",
           "reg.refresh_hint": "New version = current version + additions − removals; partners sync the difference.",
           "reg.refresh_submit": "Refresh", "task.title": "Task progress", "task.result": "Result",
           "task.new_version": "New version", "task.rows": "Valid rows", "task.rejects": "Rejected rows",
           "task.no_rejects": "No row was rejected.", "task.line": "Line", "task.reason": "Reason",
           "task.rejects_more": "The first {n} are shown; download the full list.",
           "task.download": "Download the rejects (CSV)", "task.failed": "The task failed",
           "task.back_form": "Back to the form", "task.back_list": "Back to the datasets",
           "task.epochs": "{partner}: key epoch {epoch} ({rows} tags rebuilt); the previous epoch answers {grace} more days",
           "task.base": "From version {base}: {added} added, {removed} removed"},
})


def _attributes(text: str) -> list[str]:
    parts = text.replace("，", ",").replace("、", ",").split(",")
    return [p.strip() for p in parts if p.strip()]


def install(app: FastAPI, ctx: NodeContext, auth: Authenticator, tasks: Tasks) -> None:
    # Long by design: the routes below are short closures over the context and the roles;
    # this function is their list, in the order a reader meets them on the page.
    admin = auth.require(Role.ADMIN)
    base = "/console/admin/datasets"
    limit = lambda: ctx.config.service.max_upload_mib << 20  # noqa: E731 (read per request: a reload may change it)
    limit_uploads(app, lambda path: path.startswith(base + "/") and path.endswith(("/register", "/refresh")), limit)
    clear_leftovers(ctx.config.data_dir)

    def form(request: Request, principal: Principal, name: str, template: str, *, status: int = 200,
             error: str | None = None, values: dict | None = None) -> Response:
        from node.datasets.registration import current_version
        with ctx.engine.connect() as conn:
            current = current_version(conn, name)
        if error == "too_large":
            error = translator(language(request), WORDS)("reg.too_large", mib=ctx.config.service.max_upload_mib)
        return render(request, template, principal, words=WORDS, status_code=status, name=name,
                      current=current, error=error, values=values or {}, id_types=[t.value for t in IdType],
                      encodings=ENCODINGS, sql_sources=ctx.config.sources.sql,
                      mib=ctx.config.service.max_upload_mib)

    def declared_or_404(name: str):
        from fastapi import HTTPException
        if ctx.config.dataset(name) is None:
            raise HTTPException(status_code=404, detail=f"dataset {name!r} is not declared in the node config")

    @app.get(base + "/{name}/register", include_in_schema=False)
    def register_form(request: Request, name: str, principal: Principal = Depends(admin), error: str = ""):
        declared_or_404(name)
        return form(request, principal, name, "admin_register.html", error="too_large" if error == "too_large" else None)

    @app.post(base + "/{name}/register", include_in_schema=False)
    async def register_submit(request: Request, name: str, principal: Principal = Depends(admin),
                              source: str = Form("upload"), file: UploadFile | None = File(None),
                              encoding: str = Form("auto"), sheet: str = Form(""), sql_source: str = Form(""),
                              id_column: str = Form(""), id_type: str = Form(IdType.CN_RESIDENT_ID.value),
                              attributes: str = Form(""), strict: bool = Form(False)):
        declared_or_404(name)
        values = {"source": source, "encoding": encoding, "sheet": sheet, "sql_source": sql_source,
                  "id_column": id_column, "id_type": id_type, "attributes": attributes, "strict": strict}
        kept: list[Path] = []
        try:
            kind = IdType(id_type) if id_type in {t.value for t in IdType} else None
            if kind is None or not id_column.strip():
                raise InvalidInput("name the identifier column and choose its type")
            if source == "sql":
                named = ctx.config.sources.sql_source(sql_source)
                if named is None:
                    raise InvalidInput("choose one of the configured database sources")
                opened = await run_in_threadpool(open_sql, named.database_url(), table=named.table,
                                                 query=named.query)
                label, source_kind = f"{named.name} ({'table ' + named.table if named.table else 'query'})", "sql"
            else:
                suffix, path = await _kept_file(file, kept, ctx.config.data_dir, limit())
                limits = ctx.config.sources.limits()
                if SUFFIXES[suffix] == "csv":
                    if encoding not in ENCODINGS:
                        raise InvalidInput(f"encoding is one of {', '.join(ENCODINGS)}")
                    opened = await run_in_threadpool(open_csv, path, encoding=encoding, limits=limits)
                else:  # the workbook guard reads the whole archive: off the event loop
                    opened = await run_in_threadpool(open_xlsx, path, sheet=sheet.strip() or None, limits=limits)
                label, source_kind = _shown_name(file.filename), SUFFIXES[suffix]
        except (InvalidInput, SourceError, ConfigError) as exc:
            _remove(kept)
            return form(request, principal, name, "admin_register.html", status=400, values=values,
                        error=_with_line(exc, kept, [file]))
        attrs, strictly = _attributes(attributes), bool(strict)

        def work(task) -> Outcome:
            from node.datasets.registration import register
            with opened:
                r = register(ctx, name, opened, id_column=id_column.strip(), id_type=kind, attributes=attrs,
                             strict=strictly, source_kind=source_kind, source_label=label, progress=task.progress)
            return Outcome(r.version, r.row_count, [(x.line, x.reason) for x in r.invalid],
                           {"tag_tables": r.tag_tables, "sha256": r.fingerprint})
        return _started(tasks, "register", name, principal, work, kept, [file], opened)

    @app.get(base + "/{name}/refresh", include_in_schema=False)
    def refresh_form(request: Request, name: str, principal: Principal = Depends(admin), error: str = ""):
        declared_or_404(name)
        return form(request, principal, name, "admin_refresh.html", error="too_large" if error == "too_large" else None)

    @app.post(base + "/{name}/refresh", include_in_schema=False)
    async def refresh_submit(request: Request, name: str, principal: Principal = Depends(admin),
                             add: UploadFile | None = File(None), remove: UploadFile | None = File(None),
                             encoding: str = Form("auto"), id_column: str = Form("")):
        declared_or_404(name)
        values = {"encoding": encoding, "id_column": id_column}
        kept: list[Path] = []
        opened = {}
        try:
            if not id_column.strip():
                raise InvalidInput("name the identifier column of both files")
            if encoding not in ENCODINGS:
                raise InvalidInput(f"encoding is one of {', '.join(ENCODINGS)}")
            for key, upload in (("add", add), ("remove", remove)):
                if upload is not None and upload.filename:
                    suffix, path = await _kept_file(upload, kept, ctx.config.data_dir, limit())
                    options = {"encoding": encoding} if SUFFIXES[suffix] == "csv" else {}
                    opened[key] = await run_in_threadpool(open_source, str(path),
                                                          limits=ctx.config.sources.limits(), **options)
            if not opened:
                raise InvalidInput("give a file of rows to add, of identifiers to remove, or both")
        except (InvalidInput, SourceError) as exc:
            for src in opened.values():
                src.close()
            _remove(kept)
            return form(request, principal, name, "admin_refresh.html", status=400, values=values,
                        error=_with_line(exc, kept, [u for u in (add, remove) if u is not None and u.filename]))

        def work(task) -> Outcome:
            from node.datasets.registration import refresh
            try:
                r = refresh(ctx, name, add=opened.get("add"), remove=opened.get("remove"),
                            id_column=id_column.strip(), progress=task.progress)
            finally:
                for src in opened.values():
                    src.close()
            return Outcome(r.version, r.row_count, [(x.line, x.reason) for x in r.invalid],
                           {"base": r.base_version, "added": r.added, "removed": r.removed})
        return _started(tasks, "refresh", name, principal, work, kept,
                        [u for u in (add, remove) if u is not None and u.filename], *opened.values())

    @app.get("/console/admin/tasks/{task_id}", include_in_schema=False)
    def task_page(request: Request, task_id: str, principal: Principal = Depends(admin)):
        task = _task(tasks, task_id)
        rejects = task.outcome.rejects if task.outcome else []
        lang = language(request)
        return render(request, "admin_task.html", principal, words=WORDS, task=task,
                      stage=stage_key(task.stage), shown=SHOWN_REJECTS, reject_count=len(rejects),
                      rejects=[(line, reason_text(lang, r)) for line, r in rejects[:SHOWN_REJECTS]],
                      amount=_amount(task), percent=_percent(task))

    @app.get("/console/admin/tasks/{task_id}/progress", include_in_schema=False)
    def task_progress(request: Request, task_id: str, principal: Principal = Depends(admin)) -> dict:
        task = _task(tasks, task_id)
        t = translator(language(request), WORDS)
        return {**task.as_json(), "stage_text": t(stage_key(task.stage)),
                "status_text": t("adm.task." + task.status), "amount": _amount(task), "percent": _percent(task)}

    @app.get("/console/admin/tasks/{task_id}/rejects.csv", include_in_schema=False)
    def task_rejects(task_id: str, principal: Principal = Depends(admin)) -> Response:
        task = _task(tasks, task_id)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(["line", "reason"])
        writer.writerows(task.outcome.rejects if task.outcome else [])
        filename = f"{task.dataset}-v{task.outcome.version if task.outcome else 0}-rejected.csv"
        return Response("\ufeff" + out.getvalue(), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="{filename}"'})


async def _kept_file(upload: UploadFile | None, kept: list[Path], data_dir: Path,
                     limit: int) -> tuple[str, Path]:
    """The upload's suffix and its private copy (appended to `kept`)."""
    if upload is None or not upload.filename:
        raise InvalidInput("choose a file to upload")
    suffix = Path(upload.filename).suffix.lower()
    if suffix not in SUFFIXES:
        await upload.close()
        hint = "; save it from Excel as .xlsx" if suffix == ".xls" else ""
        raise InvalidInput(f"a dataset is uploaded as a .csv or .xlsx file{hint}")
    try:
        path = await keep_upload(upload, upload_dir(data_dir), suffix, limit)
    except UploadTooLarge:
        raise InvalidInput("the file is larger than this node accepts") from None
    kept.append(path)
    return suffix, path


def _amount(task) -> str:
    """Units done of the stage, as a person reads them (bytes of a file read in MiB)."""
    if task.stage == "reading" and task.total:
        return f"{task.done / (1 << 20):,.1f} / {task.total / (1 << 20):,.1f} MiB"
    return f"{task.done:,} / {task.total:,}" if task.total else f"{task.done:,}"


def _percent(task) -> str:
    return f"{min(100, 100 * task.done // task.total)}%" if task.total else ""


def _shown_name(filename: str | None) -> str:
    """The uploaded file's name as a label: its last component, printable, bounded."""
    name = Path(filename or "upload").name
    return "".join(c for c in name if c.isprintable())[:120] or "upload"


def _with_line(exc: Exception, kept: list[Path] = (), uploads=()) -> str:
    """The refusal as a person reads it: the line it concerns, and the uploaded file's own
    name where the adapters name the node's private copy."""
    text, line = str(exc), getattr(exc, "line", None)
    for path, upload in zip(kept, uploads):
        text = text.replace(str(path), _shown_name(upload.filename)).replace(path.name, _shown_name(upload.filename))
    return text + (f" (line {line})" if line and f"line {line}" not in text else "")


def _remove(paths: list[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def _started(tasks: Tasks, kind: str, name: str, principal: Principal, work, kept: list[Path], uploads,
             *opened) -> Response:
    def cleanup() -> None:
        for src in opened:
            src.close()
        _remove(kept)
    try:
        names = {}
        for path, upload in zip(kept, uploads):
            names.update({str(path): _shown_name(upload.filename), path.name: _shown_name(upload.filename)})
        task = tasks.start(kind, name, principal.name, work, cleanup, names)
    except TaskBusy as exc:
        from fastapi import HTTPException
        raise HTTPException(status_code=409, detail=str(exc)) from None
    return RedirectResponse(f"/console/admin/tasks/{task.id}", status_code=303)


def _task(tasks: Tasks, task_id: str):
    from fastapi import HTTPException
    task = tasks.get(task_id)
    if task is None:
        raise HTTPException(status_code=404, detail="no such task (tasks are kept while the node runs)")
    return task
