"""Pick the experiment to keep: the fastest (or smallest) bundle within an accuracy budget of the teacher.

Reads the experiment table from ``dvc.api.exp_show`` (one flat row per baseline commit and experiment,
the workspace first) and each row's ``metrics/summary.json`` columns (``teacher.*``, ``student.*``,
``bundle.*``: flat keys, accuracies as fractions). The drop is ``100 * (teacher[metric] -
bundle[metric])`` points. Baselines (commits) are candidates; the workspace row is not. Queued,
running and failed experiments are rejected (a failed one shows its baseline's stale metrics).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ocrslim.core.errors import ArtifactError, ConfigError, ToolError

SUMMARY = "metrics/summary.json"
OBJECTIVES = {"latency": ("latency_ms", "ms"), "size": ("size_mb", "MB")}
_EPS = 1e-9  # a drop equal to the budget (up to float noise) is within it


@dataclass
class ExpRow:
    """One row of ``dvc exp show``: the workspace, a baseline commit, or an experiment."""

    name: str
    rev: str
    kind: str  # "workspace" | "baseline" | "experiment"
    state: str  # "success" | "queued" | "running" | "failed"
    baseline: str | None = None
    params: dict[str, Any] = field(default_factory=dict)  # flat "file:key.sub" -> value ("key.sub" for params.yaml)
    summary: dict[str, Any] | None = None  # metrics/summary.json, None if absent
    error: str | None = None


@dataclass
class Candidate:
    """A row with everything needed to rank it (values None when unknown)."""

    row: ExpRow
    teacher: float | None
    bundle: float | None
    drop: float | None
    cost: float | None  # the objective: bundle latency_ms or size_mb
    reason: str = ""  # why picked or rejected (set by choose)


@dataclass
class Selection:
    """The pick (None when nothing fits) and every row ranked, each with its reason."""

    metric: str
    objective: str
    max_drop: float
    pick: Candidate | None
    candidates: list[Candidate]

    def best_drop(self) -> Candidate | None:
        """The row with the smallest known drop that has a known cost (for the "nothing fits" message)."""
        known = [c for c in self.candidates if c.drop is not None and c.cost is not None and c.row.state == "success"]
        return min(known, key=lambda c: c.drop) if known else None


def _pts(x: float) -> str:
    """A budget in points: one decimal when that is exact (1.0), else as given (0.25)."""
    return f"{x:.1f}" if abs(10 * x - round(10 * x)) < 1e-9 else f"{x:g}"


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + "."))
        else:
            out[key] = v
    return out


_VARIANTS = ("teacher", "student", "bundle")
_META_COLUMNS = ("Experiment", "rev", "typ", "Created", "parent", "State", "Executor")


def _value(v: Any) -> Any:
    """A cell of ``dvc.api.exp_show``: numbers come as floats, booleans and missing values as text."""
    return {"None": None, "True": True, "False": False, "": None}.get(v, v) if isinstance(v, str) else v


def _summary_of(row: dict[str, Any]) -> dict[str, Any] | None:
    """The summary.json columns of a row (``bundle.e2e_f1`` or, when DVC had to disambiguate,
    ``metrics/summary.json:bundle.e2e_f1``) as ``{variant: {key: value}}``; None when the row has none."""
    out: dict[str, dict[str, Any]] = {}
    for col, raw in row.items():
        file, sep, key = col.rpartition(":")
        if sep and Path(file).name != Path(SUMMARY).name:
            continue
        variant, dot, name = key.partition(".")
        if dot and variant in _VARIANTS and "." not in name:
            value = _value(raw)
            if value is not None:
                out.setdefault(variant, {})[name] = value
    return out or None


def parse_exp_rows(table: list[dict[str, Any]], param_keys: set[str] | None = None) -> list[ExpRow]:
    """Rows from ``dvc.api.exp_show`` in its order: the workspace, then each baseline and its experiments.

    Args:
        table: the list ``dvc.api.exp_show`` returns.
        param_keys: flat params keys (``prune.ratio``) to keep as a row's params; the API mixes params and
            metrics columns, so these come from params.yaml. None keeps every non-summary column.
    """
    if not isinstance(table, list):
        raise ToolError("dvc.api.exp_show: not a list of rows. Use DVC 3.x (pip install 'dvc>=3.50').")
    rows: list[ExpRow] = []
    baseline: str | None = None
    for entry in table:
        rev = str(entry.get("rev") or "")
        if rev == "workspace":
            kind = "workspace"
        elif entry.get("typ") == "baseline":
            kind = "baseline"
        else:
            kind = "experiment"
        state = str(entry.get("State") or "success").lower()
        name = str(entry.get("Experiment") or rev)
        params = {k: _value(v) for k, v in entry.items() if k not in _META_COLUMNS
                  and (k in param_keys if param_keys is not None else k.partition(".")[0] not in _VARIANTS)}
        error = f"run failed; `dvc queue logs {name}` shows why" if state == "failed" else None
        rows.append(ExpRow(name=name, rev=rev, kind=kind, state=state, baseline=baseline if kind == "experiment"
                           else None, params=params, summary=_summary_of(entry), error=error))
        if kind == "baseline":
            baseline = name
    return rows


def _num(variant: Any, key: str) -> float | None:
    """``variant[key]`` if it is a number; missing, null or non-numeric values are unknown (never 0)."""
    v = variant.get(key) if isinstance(variant, dict) else None
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _candidate(row: ExpRow, metric: str, key: str) -> Candidate:
    s = row.summary or {}
    teacher, bundle, cost = _num(s.get("teacher"), metric), _num(s.get("bundle"), metric), _num(s.get("bundle"), key)
    drop = 100.0 * (teacher - bundle) if teacher is not None and bundle is not None else None
    return Candidate(row, teacher, bundle, drop, cost)


def _reject_reason(c: Candidate, metric: str, key: str, max_drop: float) -> str | None:
    row = c.row
    if row.state == "queued":
        return "queued, no metrics yet"
    if row.state == "running":
        return "still running, no final metrics"
    if row.state == "failed":
        return f"failed ({row.error})" if row.error else "failed"
    if row.summary is None:
        return row.error or f"no {SUMMARY}"
    for what, value in ((f"teacher.{metric}", c.teacher), (f"bundle.{metric}", c.bundle), (f"bundle.{key}", c.cost)):
        if value is None:
            return f"{what} unknown"
    assert c.drop is not None
    if c.drop > max_drop + _EPS:
        return f"drop {c.drop:.2f} > {_pts(max_drop)} points"
    return None


def choose(rows: list[ExpRow], metric: str = "e2e_f1", objective: str = "latency",
           max_drop: float = 1.0) -> Selection:
    """Keep rows whose drop is within ``max_drop`` points; pick the lowest objective (tie: higher metric)."""
    if objective not in OBJECTIVES:
        raise ConfigError(f"objective {objective!r}: unknown. Use one of {', '.join(OBJECTIVES)}.")
    key, unit = OBJECTIVES[objective]
    cands = [_candidate(r, metric, key) for r in rows if r.kind != "workspace"]
    fits = []
    for c in cands:
        c.reason = _reject_reason(c, metric, key, max_drop) or ""
        if not c.reason:
            fits.append(c)
    fits.sort(key=lambda c: (c.cost, -c.bundle, c.row.name))
    pick = fits[0] if fits else None
    if pick is not None:
        pick.reason = (f"{objective} {pick.cost:g} {unit}, drop {pick.drop:.2f} <= {_pts(max_drop)} points "
                       f"(best of {len(fits)} within budget)")
        for c in fits[1:]:
            if c.cost == pick.cost and c.bundle == pick.bundle:
                c.reason = f"ties with {pick.row.name} on {objective} and {metric}; {pick.row.name} sorts first"
            elif c.cost == pick.cost:
                c.reason = f"{objective} ties with {pick.row.name}, {metric} {c.bundle:.4f} < {pick.bundle:.4f}"
            else:
                c.reason = f"{objective} {c.cost:g} {unit} > {pick.cost:g} {unit} of {pick.row.name}"
    return Selection(metric, objective, max_drop, pick, cands)


def no_fit_message(sel: Selection) -> str:
    """The one-line error when nothing is within budget: the best available drop and the fix."""
    best = sel.best_drop()
    if best is None:
        return (f"{SUMMARY}: no finished experiment has teacher and bundle {sel.metric} and bundle "
                f"{OBJECTIVES[sel.objective][0]}. Run experiments first (dvc exp run, or dvc queue start).")
    need = math.ceil(100 * best.drop - 1e-6) / 100  # rounded up: passing it keeps that row
    return (f"--max-drop {_pts(sel.max_drop)}: no experiment within budget; the smallest {sel.metric} drop is "
            f"{best.drop:.2f} points ({best.row.name}). Pass --max-drop {need:.2f} or more, "
            f"or run milder experiments (e.g. dvc exp run -S prune.ratio=<lower>).")


def varying_params(rows: list[ExpRow], limit: int = 4) -> list[str]:
    """Param keys whose values differ between rows (the sweep's axes), at most ``limit``."""
    keys: list[str] = []
    for r in rows:
        keys += [k for k in r.params if k not in keys]
    varying = [k for k in keys if len({json.dumps(r.params.get(k), sort_keys=True) for r in rows}) > 1]
    return varying[:limit]


def format_selection(sel: Selection) -> str:
    """A table of the rows (name, state, varying params, metric, drop, latency, size), then one reason per row."""
    key = OBJECTIVES[sel.objective][0]
    rows = [c.row for c in sel.candidates]
    pkeys = varying_params([r for r in rows if r.state != "failed"] or rows)

    def num(v: Any, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    head = ["", "experiment", "state", *pkeys, f"teacher {sel.metric}", f"bundle {sel.metric}", "drop pts",
            "latency_ms", "size_mb"]
    body = []
    for c in sel.candidates:
        fresh = c.row.state == "success"  # a failed experiment shows its baseline's stale metrics
        b = ((c.row.summary or {}).get("bundle") or {}) if fresh else {}
        body.append([
            "*" if sel.pick is c else "", c.row.name, c.row.state,
            *[str(c.row.params.get(k, "-")) for k in pkeys],
            num(c.teacher if fresh else None, ".4f"), num(c.bundle if fresh else None, ".4f"),
            num(c.drop if fresh else None, ".2f"), num(_num(b, "latency_ms"), "g"), num(_num(b, "size_mb"), "g"),
        ])
    widths = [max(len(str(x)) for x in col) for col in zip(head, *body)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(line, widths)).rstrip() for line in [head, *body]]
    lines.insert(1, "  ".join("-" * w for w in widths))
    title = f"{sel.metric} budget {_pts(sel.max_drop)} points below the teacher, objective bundle {key}"
    out = [title, "", *lines, ""]
    for c in sel.candidates:
        verdict = "pick  " if sel.pick is c else "reject"
        out.append(f"{verdict} {c.row.name}: {c.reason}")
    return "\n".join(out)


def selection_json(sel: Selection) -> dict[str, Any]:
    """Machine-readable selection (``ocrslim select --json``)."""
    def cand(c: Candidate) -> dict[str, Any]:
        return {"name": c.row.name, "rev": c.row.rev, "kind": c.row.kind, "state": c.row.state,
                "baseline": c.row.baseline, "teacher": c.teacher, "bundle": c.bundle, "drop": c.drop,
                "cost": c.cost, "reason": c.reason, "params": c.row.params}

    return {"metric": sel.metric, "objective": sel.objective, "max_drop": sel.max_drop,
            "pick": sel.pick.row.name if sel.pick else None, "rows": [cand(c) for c in sel.candidates]}


def pareto_plot(sel: Selection, out: str | Path) -> Path:
    """Every experiment with a known cost and metric as a point (bundle objective vs bundle metric),
    the Pareto front drawn, the teacher's metric and the budget line marked, the pick circled."""
    from ocrslim.eval.report import tradeoff_plot

    key, unit = OBJECTIVES[sel.objective]
    rows = [{"name": c.row.name, key: c.cost, sel.metric: c.bundle} for c in sel.candidates
            if c.cost is not None and c.bundle is not None and c.row.state == "success"]
    if not rows:
        raise ArtifactError("select --plot: no experiment has both a bundle metric and a cost. Run dvc exp run first.")
    teachers = [c.teacher for c in sel.candidates if c.teacher is not None and c.row.state == "success"]
    lines = {}
    if teachers:
        t = max(teachers)
        lines = {"teacher": t, f"budget: teacher − {_pts(sel.max_drop)} points": t - sel.max_drop / 100}
    return tradeoff_plot(rows, key, f"bundle {sel.objective} ({unit})", out, ykey=sel.metric,
                         ylabel=f"bundle {sel.metric}", hlines=lines,
                         highlight=sel.pick.row.name if sel.pick is not None else None)


def _last_line(text: str) -> str:
    return (text.strip().splitlines() or ["no output"])[-1].removeprefix("ERROR: ")


def exp_rows(repo: str | Path = ".", all_commits: bool = False) -> list[ExpRow]:
    """The experiment table of ``repo`` (``dvc.api.exp_show``), parsed; params named by its params.yaml."""
    import yaml
    from dvc.api import exp_show
    from dvc.exceptions import DvcException

    root = Path(repo)
    if not root.is_dir():
        raise ArtifactError(f"{repo}: not a folder. Pass --repo the DVC repository root.")
    try:
        table = exp_show(repo=str(root), num=-1 if all_commits else 1)
    except DvcException as exc:
        raise ToolError(f"dvc exp show: {_last_line(str(exc))}. Run it in a DVC repo (or --repo).") from None
    params_file = root / "params.yaml"
    keys = set(_flatten(yaml.safe_load(params_file.read_text(encoding="utf-8")) or {})) \
        if params_file.is_file() else None
    return parse_exp_rows(table, keys)


def exp_apply(name: str, repo: str | Path = ".") -> None:
    """``dvc exp apply NAME`` in ``repo`` (DVC's Python API)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(repo)) as dvc_repo:
            dvc_repo.experiments.apply(name)
    except DvcException as exc:
        raise ToolError(f"dvc exp apply {name}: {_last_line(str(exc))}. Commit or stash workspace changes, "
                        "then retry.") from None
    print(f"applied experiment {name} to the workspace (dvc exp apply)")
