"""What the agency admin's pages share: their words and a few helpers."""
from __future__ import annotations

WORDS = {
    "zh": {
        "adm.datasets": "数据集管理", "adm.grants": "授权与策略", "adm.register": "登记新版本",
        "adm.refresh": "增量更新", "adm.dataset": "数据集", "adm.version": "版本", "adm.status": "状态",
        "adm.rows": "有效行数", "adm.invalid": "拒收行数", "adm.source": "来源", "adm.registered": "登记时间",
        "adm.actions": "操作", "adm.retire": "停用", "adm.purge": "清除数据", "adm.rotate": "轮换密钥",
        "adm.rotate_all": "全部授权方", "adm.rotate_partner": "轮换对象", "adm.no_versions": "尚未登记任何版本。",
        "adm.status.active": "在用", "adm.status.served": "当前服务", "adm.status.standby": "备用",
        "adm.standby_hint": "较新的版本停用后，此版本将恢复服务", "adm.status.retired": "已停用", "adm.status.purged": "已清除",
        "adm.confirm.retire": "确定停用 {name} 第 {version} 版？合作方将不能再查询此版本。",
        "adm.confirm.purge": "确定清除 {name} 第 {version} 版的全部个人数据？此操作不可撤销（版本记录与账本条目保留）。",
        "adm.confirm.rotate": "确定立即为 {name} 启动新的密钥周期？合作方需要重新同步。",
        "adm.msg.retired": "已停用 {name} 第 {version} 版。", "adm.msg.purged": "已清除 {name} 第 {version} 版的数据（{rows} 行）。",
        "adm.refused": "操作未执行", "adm.declared": "配置中声明的数据集", "adm.tasks": "最近的任务",
        "adm.task": "任务", "adm.task.register": "登记", "adm.task.refresh": "增量更新", "adm.task.rotate": "密钥轮换",
        "adm.task.running": "进行中", "adm.task.done": "已完成", "adm.task.failed": "失败",
        "adm.stage": "阶段", "adm.progress": "进度", "adm.stage.queued": "排队中", "adm.stage.reading": "读取并校验数据",
        "adm.stage.tags": "计算各授权方的标签", "adm.stage.copying": "复制上一版本", "adm.stage.threshold": "准备阈值表",
        "adm.stage.rotating": "重建标签", "adm.ledgered": "此操作已记入账本，操作人：{actor}",
        "adm.epoch": "密钥周期", "adm.partner": "合作方", "adm.view": "查看",
        "adm.colon": "：", "adm.started": "开始时间", "adm.by": "操作人", "adm.kind.csv": "CSV 文件", "adm.kind.xlsx": "Excel 文件", "adm.kind.sql": "数据库", "adm.kind.refresh": "增量更新",
    },
    "en": {
        "adm.datasets": "Datasets", "adm.grants": "Grants and policy", "adm.register": "Register a version",
        "adm.refresh": "Refresh", "adm.dataset": "Dataset", "adm.version": "Version", "adm.status": "Status",
        "adm.rows": "Valid rows", "adm.invalid": "Rejected rows", "adm.source": "Source", "adm.registered": "Registered",
        "adm.actions": "Actions", "adm.retire": "Retire", "adm.purge": "Purge data", "adm.rotate": "Rotate key",
        "adm.rotate_all": "Every granted partner", "adm.rotate_partner": "Rotate for",
        "adm.no_versions": "No version registered yet.",
        "adm.status.active": "active", "adm.status.served": "served", "adm.status.standby": "standby",
        "adm.standby_hint": "Served again if the newer versions are retired", "adm.status.retired": "retired", "adm.status.purged": "purged",
        "adm.confirm.retire": "Retire {name} version {version}? Partners can no longer query it.",
        "adm.confirm.purge": "Delete every personal record of {name} version {version}? This cannot be undone "
                             "(the version's record and ledger entries stay).",
        "adm.confirm.rotate": "Start a new key epoch for {name} now? Partners re-sync.",
        "adm.msg.retired": "Retired {name} version {version}.",
        "adm.msg.purged": "Purged the data of {name} version {version} ({rows} rows).",
        "adm.refused": "Not done", "adm.declared": "Datasets declared in the config", "adm.tasks": "Recent tasks",
        "adm.task": "Task", "adm.task.register": "Registration", "adm.task.refresh": "Refresh",
        "adm.task.rotate": "Key rotation", "adm.task.running": "running", "adm.task.done": "done",
        "adm.task.failed": "failed", "adm.stage": "Stage", "adm.progress": "Progress", "adm.stage.queued": "queued",
        "adm.stage.reading": "reading and checking rows", "adm.stage.tags": "computing each partner's tags",
        "adm.stage.copying": "copying the previous version", "adm.stage.threshold": "preparing threshold tables",
        "adm.stage.rotating": "rebuilding tags", "adm.ledgered": "Ledgered; actor: {actor}",
        "adm.epoch": "Key epoch", "adm.partner": "Partner", "adm.view": "View",
        "adm.colon": ": ", "adm.started": "Started", "adm.by": "By", "adm.kind.csv": "CSV file", "adm.kind.xlsx": "Excel file", "adm.kind.sql": "database", "adm.kind.refresh": "refresh",
    },
}


def words(*more: dict) -> dict:
    """The shared words with a page's own."""
    out = {lang: dict(WORDS[lang]) for lang in WORDS}
    for extra in more:
        for lang in out:
            out[lang].update(extra.get(lang, {}))
    return out


def stage_key(stage: str) -> str:
    """A stage's word key; unknown stages (threshold preparation names its own) fall back."""
    if stage.startswith("threshold"):
        return "adm.stage.threshold"
    return f"adm.stage.{stage}" if stage in ("queued", "reading", "tags", "copying", "rotating") else stage


def local_time(zone: str):
    """A formatter of stored moments (UTC; SQLite returns them naive) in the console's time zone."""
    from datetime import timezone
    from zoneinfo import ZoneInfo
    tz = ZoneInfo(zone)

    def shown(moment) -> str:
        aware = moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)
        return aware.astimezone(tz).strftime("%Y-%m-%d %H:%M")
    return shown


def actor_of(principal) -> str:
    return f"console:{principal.name}"



# The adapters' reasons for a rejected row (fixed phrases, never a value), as read in Chinese.
_REASONS_ZH = {
    "empty": "标识为空", "invalid birth date": "出生日期无效", "invalid character": "含有无效字符",
    "wrong length": "长度不正确", "invalid region code": "地区码无效", "bad check digit": "校验码错误",
    "not a mainland China mobile number": "不是中国大陆手机号码", "too long": "过长",
    "removal list: identifier is not in the dataset": "删除名单：该标识不在数据集中",
    "additions: identifier is already in the dataset": "新增行：该标识已在数据集中",
    "identifier cell holds a number too large for the spreadsheet to store exactly (digits lost); "
    "format the column as text and re-enter the values":
        "标识单元格以数字存储，超出电子表格的精度（已丢失位数）；请将该列设为文本格式后重新录入",
}


def reason_text(lang: str, reason: str) -> str:
    """A rejected row's reason in the page's language (unknown phrases as they are)."""
    if lang != "zh":
        return reason
    import re
    repeated = re.fullmatch(r"duplicate identifier \(first seen on line (\d+)\)", reason)
    if repeated:
        return f"重复的标识（首次出现在第 {repeated.group(1)} 行）"
    return _REASONS_ZH.get(reason, reason)


class Flash:
    """One-time messages across a redirect (POST, then GET): the redirect carries a random
    key, the page shows the message once, to the user it was made for. A crafted link
    cannot make the console announce an action that did not happen."""

    KEEP = 200

    def __init__(self) -> None:
        import threading
        self._lock = threading.Lock()
        self._items: dict[str, tuple[str, tuple]] = {}

    def put(self, owner: str, message: tuple) -> str:
        import secrets
        key = secrets.token_urlsafe(12)
        with self._lock:
            if len(self._items) >= self.KEEP:
                self._items.pop(next(iter(self._items)))
            self._items[key] = (owner, message)
        return key

    def take(self, owner: str, key: str) -> tuple | None:
        with self._lock:
            found = self._items.get(key)
            if found is None or found[0] != owner:
                return None
            del self._items[key]
        return found[1]
