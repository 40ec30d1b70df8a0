"""What a result file says, in the reader's language: headers, answer words, query facts.

The readers of result files are officers, so headers and answers are Chinese by default
(``--lang zh``); ``--lang en`` gives English ones. The operator's own columns keep their
own headers (身份证号 stays 身份证号). Every word is listed in README.md, "Result files".
Files are written by :func:`node.storage.result_files.write_result` (format by extension,
owner-only); this module decides their columns and the facts that name their query: the
query id and where this node's ledger holds it, so an appeal or an audit can find it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any, Iterable, Sequence

from node.runtime.context import NodeContext
from node.storage.result_files import ResultInfo, ResultTable, write_result


class Lang(str, Enum):
    zh = "zh"
    en = "en"


# key: (Chinese, English)
_WORDS = {
    "line": ("行号", "line"), "answer": ("结果", "answer"), "note": ("说明", "note"),
    "reason": ("原因", "reason"),
    "yes": ("是", "yes"), "no": ("否", "no"), "invalid": ("无效", "invalid"),
    "no_income": ("无登记收入", "no_income_registered"),
    "decision": ("判定", "decision"), "eligible": ("符合", "eligible"),
    "not_eligible": ("不符合", "not_eligible"), "undetermined": ("无法判定", "undetermined"),
    "explanation": ("依据", "explanation"), "query_ids": ("查询编号", "query_ids"),
    "group": ("分组", "group"), "all": ("(全部)", "(all)"),
    "count": ("人数", "count"), "sum": ("合计", "sum"), "mean": ("平均值", "mean"),
    "count_noise_bound": ("人数噪声上限(±)", "count_noise_bound"),
    "sum_noise_bound": ("合计噪声上限(±)", "sum_noise_bound"),
    "mean_noise_bound": ("平均值噪声上限(±)", "mean_noise_bound"),
    "suppressed": ("已抑制", "suppressed"),
    "in_dataset": ("在数据集中的人数", "in_dataset"), "noise_bound": ("噪声上限(±)", "noise_bound"),
    "asked": ("查询人数", "asked"),
    # sheet titles
    "results": ("结果", "results"), "rejected": ("未查询的行", "rejected"),
    "decisions": ("判定", "decisions"), "figures": ("统计", "figures"), "info": ("查询信息", "query"),
}

# The facts' labels on a workbook's information sheet (JSON keeps the English keys).
_FACTS = {
    "query_id": "查询编号", "ledger_node": "账本所属节点", "ledger_index": "账本位置",
    "kind": "查询类型", "partner": "对方节点", "dataset": "数据集", "version": "版本",
    "epoch": "密钥周期", "purpose": "用途", "predicate": "条件", "select": "输出的行",
    "rows": "输入行数", "asked": "查询人数", "matched_rows": "在数据集中的行数",
    "invalid": "无效行数", "epsilon": "差分隐私预算ε", "count_noise_bound": "人数噪声上限(±)",
    "sum_noise_bound": "合计噪声上限(±)", "min_group_size": "最小分组人数",
    "value": "统计的列", "group_by": "分组的列", "threshold_column": "门槛金额列",
    "rule": "规则", "rule_text": "规则内容", "queries": "各项查询", "source": "来源", "written_at": "生成时间",
    "input": "输入文件", "id_column": "身份证号列",
}


class Words:
    """The headers and answer words of one language."""

    def __init__(self, lang: Lang | str = Lang.zh) -> None:
        self.lang = Lang(lang)
        self._i = 0 if self.lang is Lang.zh else 1

    def __getitem__(self, key: str) -> str:
        return _WORDS[key][self._i]

    def info(self, facts: dict[str, Any]) -> ResultInfo:
        labels = {k: _FACTS.get(k, k) for k in facts} if self.lang is Lang.zh else {}
        if self.lang is Lang.zh:
            labels.update((k, _FACTS[k]) for item in facts.get("queries", []) for k in item
                          if k in _FACTS)
        return ResultInfo(facts, labels, self["info"])


def ledger_position(ctx: NodeContext, query_id: str) -> int | None:
    """Where this node's ledger holds the query: the index of its last entry (None: nowhere)."""
    found = ctx.ledger.find_query(query_id) if query_id else []
    return found[-1][0] if found else None


def query_facts(ctx: NodeContext, query_id: str, **facts: Any) -> dict[str, Any]:
    """The facts every result file carries: the query id, its place in this node's ledger,
    then ``facts`` (kind, partner, dataset, ...) and when the file was written."""
    return {"query_id": query_id, "ledger_node": ctx.config.node.id,
            "ledger_index": ledger_position(ctx, query_id),
            **{k: v for k, v in facts.items() if v is not None},
            "written_at": ctx.clock.now().isoformat(timespec="seconds")}


@dataclass(frozen=True)
class Rejected:
    """A row that was not asked: where it is, its cells, and why (never its value)."""

    line: int
    values: dict[str, str]
    reason: str


def write_rejects(path: Path, words: Words, columns: Sequence[str], id_column: str,
                  rejected: Iterable[Rejected], facts: dict[str, Any]) -> int:
    """The rows not asked, with every column but the identifier, so an officer can find
    the application (申请编号, name, ...) and act on it; written even when empty."""
    return write_result(path, rejects_table(words, columns, id_column, rejected), words.info(facts))


def rejects_table(words: Words, columns: Sequence[str], id_column: str,
                  rejected: Iterable[Rejected]) -> ResultTable:
    """The rows not asked (see :func:`write_rejects`) as a table, for any writer."""
    keep = [c for c in columns if c != id_column]
    rows = ([r.line, *(r.values.get(c, "") for c in keep), r.reason] for r in rejected)
    return ResultTable([words["line"], *keep, words["reason"]], rows, words["rejected"])


def mean_noise_bound(count: int | None, total: int | None, count_bound: int,
                     sum_bound: int) -> float | None:
    """How far a mean released as noised sum / noised count can be from the true mean.

    The true sum is within ``sum_bound`` of ``total`` and the true count within
    ``count_bound`` of ``count``; a ratio is monotone in each, so its extremes lie at the
    corners. None when the count's interval reaches zero (no bound exists).
    """
    if count is None or total is None or count <= 0:
        return None
    if not count_bound and not sum_bound:
        return 0.0
    low = count - count_bound
    if low < 1:
        return None
    mean = total / count
    worst = max(abs(s / c - mean) for s in (total - sum_bound, total + sum_bound)
                for c in (low, count + count_bound))
    return math.ceil(worst * 100) / 100  # rounded up: a bound stays a bound


def figures_table(words: Words, result, group_by: str | None) -> ResultTable:
    """An aggregate's groups: each figure beside its noise bound; suppressed groups blank."""
    shown = [o for o in ("count", "sum", "mean") if o in result.ops]
    columns = [group_by or words["group"]]
    for op in shown:
        columns += [words[op], words[f"{op}_noise_bound"]]
    columns.append(words["suppressed"])
    bounds = {"count": result.count_noise_bound, "sum": result.sum_noise_bound}

    def row(name, g):
        figures = {"count": g.count, "sum": g.total, "mean": g.mean}
        bounds["mean"] = mean_noise_bound(g.count, g.total, result.count_noise_bound,
                                          result.sum_noise_bound)
        cells = [name or words["all"]]
        for op in shown:
            cells += [None, None] if g.suppressed else [figures[op], bounds[op]]
        return [*cells, words["yes" if g.suppressed else "no"]]
    return ResultTable(columns, [row(n, g) for n, g in result.groups.items()], words["figures"])


def rule_facts(ctx: NodeContext, rule: str, text: str, queries: dict[str, str],
               **facts: Any) -> dict[str, Any]:
    """A rule's decisions rest on several queries: each one's id and ledger position."""
    listed = [{"source": source, "query_id": qid, "ledger_index": ledger_position(ctx, qid)}
              for source, qid in queries.items()]
    return {"rule": rule, "rule_text": text, "query_id": [q["query_id"] for q in listed],
            "ledger_node": ctx.config.node.id,
            "ledger_index": [q["ledger_index"] for q in listed], "queries": listed,
            **{k: v for k, v in facts.items() if v is not None},
            "written_at": ctx.clock.now().isoformat(timespec="seconds")}


def decisions_table(words: Words, columns: Sequence[str], decisions) -> ResultTable:
    """One decision per input row: 符合 / 不符合 / 无法判定, why, and the query ids behind it."""
    word = {True: words["eligible"], False: words["not_eligible"], None: words["undetermined"]}
    rows = ([line, *(values.get(c, "") for c in columns), word[eligible], explanation,
             ";".join(qids)] for line, values, eligible, explanation, qids in decisions)
    return ResultTable([words["line"], *columns, words["decision"], words["explanation"],
                        words["query_ids"]], rows, words["decisions"])
