"""The CI metrics-diff report a reviewer reads, and the ``--fail-on`` thresholds (used by ``ocrslim.cidiff``).

Everything here is a pure function of ``dvc metrics diff --json --all`` output (``{file: {metric: {"old",
"new", "diff"}}}``) and of strings: the headline table of the shipped bundle (``metrics/summary.json``,
``bundle.*`` keys written by :mod:`ocrslim.eval.report`), the full ``dvc metrics diff --md`` folded in a
``<details>`` block, the plots that changed, and threshold rules that turn a moved metric into a failed job.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ocrslim.core.errors import OcrslimError

Diff = dict[str, dict[str, dict[str, Any]]]

# The file the report stage writes the flat per-variant numbers to (dvc.yaml's report stage).
SUMMARY_FILE = "metrics/summary.json"


@dataclass(frozen=True)
class Headline:
    """One row of the headline table: a ``metrics/summary.json`` key and how its change reads."""

    key: str
    label: str
    unit: str  # "%": change relative to before (sizes, speed, memory); "pt": change in points (accuracy, 0..1)
    host: bool = False  # measured on the machine that ran the stage: moves between runs of identical code


# The shipped bundle, in the order a reviewer asks: how big, how fast, how accurate.
HEADLINE: tuple[Headline, ...] = (
    Headline("bundle.size_mb", "size (MB)", "%"),
    Headline("bundle.params_m", "params (M)", "%"),
    Headline("bundle.latency_ms", "latency per page, p50 (ms)", "%", host=True),
    Headline("bundle.peak_rss_mb", "peak RSS (MB)", "%", host=True),
    Headline("bundle.det_hmean", "det hmean", "pt"),
    Headline("bundle.e2e_f1", "e2e F1", "pt"),
    Headline("bundle.rec_acc", "rec acc", "pt"),
    Headline("bundle.synth_1ned_cjk", "Chinese 1−NED (synthetic lines with CJK)", "pt"),
)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def change(old: Any, new: Any, unit: str) -> float | None:
    """``new - old`` in ``unit``: ``"pt"`` points (×100 of a 0..1 value), ``"%"`` percent of ``|old|``, ``""``
    the metric's own units; None when a side is missing or not a number, or ``%`` of a zero.

    >>> change(0.90, 0.885, "pt"), change(2.0, 2.1, "%"), change(0.9, 0.885, "")
    (-1.5, 5.0, -0.015)
    """
    if not (_is_num(old) and _is_num(new)):
        return None
    if unit == "%":
        return None if old == 0 else round((new - old) / abs(old) * 100, 9)
    return round((new - old) * (100 if unit == "pt" else 1), 9)  # rounded: no float-noise breaks or "-0.00"


def _value(v: Any, unit: str) -> str:
    if not _is_num(v):
        return "–"
    return f"{v:.4f}" if unit == "pt" else f"{v:g}"


def _change_cell(old: Any, new: Any, unit: str) -> str:
    if not _is_num(new) and not _is_num(old):
        return "–"
    if not _is_num(old):
        return "new"
    if not _is_num(new):
        return "gone"
    c = change(old, new, unit)
    if c is None:
        return "–"
    return f"{c:+.2f} pt" if unit == "pt" else f"{c:+.1f}%"


def headline_table(diff: Diff, summary_file: str = SUMMARY_FILE, host_note: str = "") -> str:
    """Markdown table of the shipped bundle before → after (empty when ``summary_file`` is not in ``diff``).

    Rows whose value is host-dependent (latency, memory) are marked †; ``host_note`` is appended to the
    footnote (e.g. where the "before" side was measured)."""
    rows = diff.get(summary_file)
    if not rows or not any(h.key in rows for h in HEADLINE):
        return ""
    lines = ["| shipped bundle | metric | before | after | change |", "|---|---|---:|---:|---:|"]
    for h in HEADLINE:
        r = rows.get(h.key, {})
        old, new = r.get("old"), r.get("new")
        label = f"{h.label} †" if h.host else h.label
        lines.append(f"| {label} | `{h.key}` | {_value(old, h.unit)} | {_value(new, h.unit)} | "
                     f"{_change_cell(old, new, h.unit)} |")
    foot = ("† host-dependent: measured on the machine that ran the stage, so it moves between runs of "
            "identical code; read only large moves.")
    lines += ["", foot + (f" {host_note}" if host_note else ""),
              "Accuracy changes are in points (0.01 = 1 pt), size and speed changes in percent of before."]
    return "\n".join(lines)


def details(summary: str, body: str) -> str:
    """``body`` folded under ``summary`` (GitHub and GitLab render ``<details>``; blank lines keep Markdown)."""
    return f"<details><summary>{summary}</summary>\n\n{body.strip()}\n\n</details>"


def table_rows(table_md: str) -> int:
    """How many data rows a Markdown table has (0 for an empty string)."""
    lines = [ln for ln in table_md.strip().splitlines() if ln.startswith("|")]
    return max(0, len(lines) - 2)


@dataclass(frozen=True)
class PlotChange:
    """An image plot that differs between the two sides: its path and the two rendered files (None: absent)."""

    path: str
    before: str | None
    after: str | None


def plots_block(plots: Sequence[PlotChange], images: bool, where: str = "") -> str:
    """The plots that changed: a before/after table of images (``images``, links relative to the report file),
    or their names and ``where`` the images are (for pages that cannot show local files, such as a CI
    job summary)."""
    if not plots:
        return ""
    if not images:
        names = ", ".join(f"`{p.path}`" for p in plots)
        return f"**Plots that changed** (`dvc plots diff`): {names}" + (f" — images in {where}." if where else ".")
    lines = ["**Plots that changed** (`dvc plots diff`):", "", "| plot | before | after |", "|---|---|---|"]
    for p in plots:
        cells = [f"![{side}]({f})" if f else "–" for side, f in (("before", p.before), ("after", p.after))]
        lines.append(f"| `{p.path}` | {cells[0]} | {cells[1]} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- thresholds
@dataclass(frozen=True)
class Rule:
    """``--fail-on`` rule: fail when a metric matching ``glob`` changes past ``limit`` (``op`` ``<`` or ``>``).

    ``unit``: ``""`` the metric's own units, ``"pt"`` points (×100), ``"%"`` percent of the before value."""

    glob: str
    op: str
    limit: float
    unit: str

    def __str__(self) -> str:
        return f"{self.glob}{self.op}{self.limit:+g}{self.unit}"


_RULE = re.compile(r"^\s*([^<>\s]+)\s*([<>])\s*([+-]?\d+(?:\.\d+)?)\s*(%|pt)?\s*$")
RULE_SYNTAX = ("'<metric glob><op><change>[pt|%]', e.g. bundle.e2e_f1<-1pt (dropped by more than 1 point), "
               "bundle.size_mb>+5% (grew by more than 5%) or bundle.e2e_f1<-0.01 (the metric's own units)")


def parse_rules(text: str) -> list[Rule]:
    """``--fail-on`` rules, comma-separated: ``<metric glob><op><change>[pt|%]``.

    The glob matches ``<metric>`` or ``<file>:<metric>`` of the diff (``bundle.e2e_f1``,
    ``metrics/eval_bundle.json:synth_test.*``). Without a unit the change is in the metric's own units
    (``bundle.e2e_f1<-0.01``), with ``pt`` in points (``bundle.e2e_f1<-1pt``, the same rule), with ``%``
    relative to the before value (``bundle.size_mb>+5%``).

    >>> parse_rules("bundle.e2e_f1<-1pt, *size_mb>+5%")
    [Rule(glob='bundle.e2e_f1', op='<', limit=-1.0, unit='pt'), Rule(glob='*size_mb', op='>', limit=5.0, unit='%')]
    """
    rules = []
    for item in filter(None, (x.strip() for x in text.split(","))):
        m = _RULE.match(item)
        if not m:
            raise OcrslimError(f"--fail-on: {item!r} is not {RULE_SYNTAX}. Fix the rule.")
        rules.append(Rule(m.group(1), m.group(2), float(m.group(3)), m.group(4) or ""))
    return rules


def _matches(rule: Rule, diff: Diff) -> list[tuple[str, str, Any, Any]]:
    return [(path, name, row.get("old"), row.get("new"))
            for path, metrics in diff.items() for name, row in metrics.items()
            if fnmatch.fnmatchcase(name, rule.glob) or fnmatch.fnmatchcase(f"{path}:{name}", rule.glob)]


def check_rules(diff: Diff, rules: Sequence[Rule]) -> list[str]:
    """The rules ``diff`` breaks, one line each. A metric missing on either side breaks nothing."""
    broken = []
    for rule in rules:
        for path, name, old, new in _matches(rule, diff):
            c = change(old, new, rule.unit)
            if c is not None and ((rule.op == "<" and c < rule.limit) or (rule.op == ">" and c > rule.limit)):
                broken.append(f"{path}:{name} {old} -> {new} (change {c:+.4g}{rule.unit}) breaks {rule}")
    return broken


def rule_hints(diff: Diff, rules: Sequence[Rule]) -> list[str]:
    """Rules that cannot mean what they say: matching nothing, or a unit-less limit of 1 or more on a
    metric that lives in 0..1 (``bundle.e2e_f1<-1.0`` can never break; ``-1pt`` is probably meant)."""
    hints = []
    for rule in rules:
        found = _matches(rule, diff)
        if not found:
            hints.append(f"--fail-on {rule}: no metric matches {rule.glob!r}; check the name in the table.")
        elif not rule.unit and abs(rule.limit) >= 1 and all(
                all(not _is_num(v) or 0 <= v <= 1 for v in (old, new)) for _, _, old, new in found):
            hints.append(f"--fail-on {rule}: the matching metrics lie in 0..1, so a change of {rule.limit:+g} "
                         f"in their own units can never happen; write {rule.limit:+g}pt for points.")
    return hints


def thresholds_block(text: str, broken: Sequence[str], hints: Sequence[str], n_rules: int) -> str:
    """The ``--fail-on`` verdict: each broken rule, or that all held; hints as notes."""
    verdict = [f"- FAIL {b}" for b in broken] or [f"- all {n_rules} --fail-on rules hold"]
    verdict += [f"- note: {h}" for h in hints]
    return f"**Thresholds** (`{text}`):\n\n" + "\n".join(verdict)
