"""One self-contained HTML report of finished runs, causal traces and analyses.

The page references no URL: CSS and JS are inlined from ``assets/``, charts and figures are
base64 data URIs, and the per-sample records are a JSON ``<script>`` block that the inlined
JS renders into a filterable table. Argument directories are told apart by the file they
hold: ``summary.json`` (a finished run), ``trace.json`` (a causal trace), ``analysis.json``
(a representation analysis); a directory may hold several of them.
"""

from __future__ import annotations

import base64
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from html import escape
from importlib import resources
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ..paths import write_text_atomic
from ..runs.store import SUMMARY
from ..runs.summary import RunSummary
from .html_samples import SamplesReadError, run_labels, samples_section
from .html_samples import collect_samples, embed_json  # noqa: F401  (importers of html.py read them here)
from .html_tables import tables_section
from .run_header import header_html
from .tables import factcheck_table, negation_table
from ..errors import UserError

TRACE = "trace.json"
ANALYSIS = "analysis.json"
_MIME = MappingProxyType({".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
                          ".svg": "image/svg+xml", ".webp": "image/webp"})


class ReportInputError(UserError, ValueError):
    """An argument directory that the report cannot use (none of the known files, bad JSON)."""


@dataclass(frozen=True)
class Sources:
    """The argument directories, by what they hold (argument order kept within each kind)."""

    runs: list[Path] = field(default_factory=list)
    traces: list[Path] = field(default_factory=list)
    analyses: list[Path] = field(default_factory=list)


def classify_dirs(dirs: Sequence[str | Path]) -> Sources:
    if not dirs:
        raise ReportInputError("give at least one run, trace or analysis directory")
    out = Sources()
    for d in map(Path, dirs):
        buckets = [bucket for name, bucket in ((SUMMARY, out.runs), (TRACE, out.traces), (ANALYSIS, out.analyses))
                   if (d / name).is_file()]
        if not buckets:
            raise ReportInputError(f"{d}: holds none of {SUMMARY}, {TRACE}, {ANALYSIS} (not a finished run, "
                                   "trace or analysis directory; an unfinished run has no summary.json yet)")
        for bucket in buckets:
            bucket.append(d)
    return out


def _read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ReportInputError(f"cannot read {path}: {exc}") from exc
    if not isinstance(obj, dict):
        raise ReportInputError(f"{path}: expected a JSON object")
    return obj


def _asset(name: str) -> str:
    return (resources.files("editprobe.report") / "assets" / name).read_text(encoding="utf-8")


# --- small pieces ---------------------------------------------------------------------------
def _fmt(value: Any) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v) for v in value)
    return str(value)


def _kv_table(pairs: Iterable[tuple[str, Any]]) -> str:
    body = "".join(f"<tr><td>{escape(str(k))}</td><td>{escape(_fmt(v))}</td></tr>" for k, v in pairs)
    return f'<table class="ep-table ep-kv"><tbody>{body}</tbody></table>'


def _image(path: Path, caption: str) -> str:
    if not path.is_file():
        return f'<p class="missing">figure missing: {escape(caption)} ({escape(str(path))} not found)</p>'
    mime = _MIME.get(path.suffix.lower())
    if mime is None:
        return f'<p class="missing">figure not embedded: {escape(str(path))} (unknown image type)</p>'
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return (f'<figure><img src="data:{mime};base64,{data}" alt="{escape(caption)}">'
            f"<figcaption>{escape(caption)}</figcaption></figure>")


def _figures(root: Path, figures: Any, what: str) -> str:
    if not isinstance(figures, Mapping) or not figures:
        return f'<p class="missing">no figures listed in {escape(what)}</p>'
    items = [_image(root / str(name), f"{key}: {name}") for key, name in figures.items()]
    return f'<div class="figures">{"".join(items)}</div>'


# --- sections -------------------------------------------------------------------------------
def _charts_section(summaries: Sequence[RunSummary]) -> str:
    from .charts import factcheck_charts, negation_charts  # matplotlib only when drawing

    charts = negation_charts(negation_table(summaries)) + factcheck_charts(factcheck_table(summaries))
    # No caption: the title is drawn in the image, which then stands alone when saved.
    figs = "".join(f'<figure class="chart chart-{c.kind}"><img src="{c.data_uri}" alt="{escape(c.alt)}" '
                   f'title="{escape(c.title)}"></figure>' for c in charts)
    return f'<section id="charts"><h2>Charts</h2><div class="charts">{figs}</div></section>'


def _curves_section(summaries: Sequence[RunSummary]) -> str:
    """The curves over edits (docs/curves.md) as PNG data URIs; "" when no run has a curve."""
    from .curves import CURVES_CSV, curve_figures, curve_table  # matplotlib only when drawing

    df = curve_table(summaries)
    if df is None:
        return ""
    figs = "".join(f'<figure class="chart chart-curve"><img src="data:image/png;base64,'
                   f'{base64.b64encode(f.files["png"]).decode("ascii")}" alt="{escape(f.alt)}" '
                   f'title="{escape(f.title)}"></figure>' for f in curve_figures(df, ("png",)))
    note = ("Each metric against the number of edits made so far, one line per method; the shaded band is its 95% "
            f"interval. The numbers are in {CURVES_CSV} beside the tables.")
    return (f'<section id="curves"><h2>Curves over edits</h2><p class="note">{escape(note)}</p>'
            f'<div class="charts">{figs}</div></section>')


def _trace_panel(root: Path) -> str:
    t = _read_json(root / TRACE)
    rec = t.get("recommendation") if isinstance(t.get("recommendation"), Mapping) else {}
    info = _kv_table([("model", t.get("model")), ("data", t.get("data")), ("records known (n_known)", t.get("n_known")),
                      ("layers", t.get("num_layers"))])
    advice = _kv_table([("kind", rec.get("kind")), ("peak layer", rec.get("peak_layer")),
                        ("window", rec.get("window")), ("rule", rec.get("rule"))])
    return (f'<div class="panel trace"><h3>Causal trace: {escape(_fmt(t.get("model")))} on '
            f'{escape(_fmt(t.get("data")))}</h3><p class="sources"><code>{escape(str(root))}</code></p>'
            f'<div class="figures">{info}<div><strong>Recommended edit layers</strong>{advice}</div></div>'
            f'{_figures(root, t.get("figures"), TRACE)}</div>')


def _analysis_panel(root: Path) -> str:
    a = _read_json(root / ANALYSIS)
    summary = a.get("summary") if isinstance(a.get("summary"), Mapping) else {}
    info = _kv_table([("model", a.get("model")), ("method", a.get("method")), ("data", a.get("data")),
                      ("layer", a.get("layer")), ("records selected", a.get("n_selected"))])
    return (f'<div class="panel analysis"><h3>Analysis: {escape(_fmt(a.get("method")))} on '
            f'{escape(_fmt(a.get("model")))}, layer {escape(_fmt(a.get("layer")))}</h3>'
            f'<p class="sources"><code>{escape(str(root))}</code></p>'
            f'<div class="figures">{info}<div><strong>Summary</strong>{_kv_table(summary.items())}</div></div>'
            f'{_figures(root, a.get("figures"), ANALYSIS)}</div>')


# --- the page -------------------------------------------------------------------------------
def build_html(sources: Sources, summaries: Sequence[RunSummary] = (), title: str = "editprobe report") -> str:
    """The page for ``sources``; ``summaries`` are the runs' summary.json (as loaded by
    :func:`editprobe.report.load_summaries`, in the order of ``sources.runs``)."""
    sections, nav = [], []
    if summaries:
        dirs = sources.runs if len(sources.runs) == len(summaries) else None  # the seeds table's records
        labels = run_labels(sources.runs) if dirs else [f"run {i + 1}" for i in range(len(summaries))]
        sections += [header_html(summaries, dirs or [None] * len(summaries), labels),
                     tables_section(summaries, dirs), _charts_section(summaries)]
        nav += [("runs", "Runs"), ("tables", "Tables"), ("charts", "Charts")]
        curves = _curves_section(summaries)
        if curves:
            sections.append(curves)
            nav.append(("curves", "Curves over edits"))
    if sources.traces:
        sections.append('<section id="traces"><h2>Causal tracing</h2>'
                        + "".join(_trace_panel(d) for d in sources.traces) + "</section>")
        nav.append(("traces", "Causal tracing"))
    if sources.analyses:
        sections.append('<section id="analyses"><h2>Analyses</h2>'
                        + "".join(_analysis_panel(d) for d in sources.analyses) + "</section>")
        nav.append(("analyses", "Analyses"))
    if sources.runs:
        try:
            sections.append(samples_section(sources.runs))
        except SamplesReadError as exc:
            raise ReportInputError(str(exc)) from exc
        nav.append(("samples", "Samples"))
    by_kind = (("run", sources.runs), ("trace", sources.traces), ("analysis", sources.analyses))
    listed = "".join(f"<li>{kind}: <code>{escape(str(d))}</code></li>" for kind, dirs in by_kind for d in dirs)
    links = "".join(f'<a href="#{anchor}">{label}</a>' for anchor, label in nav)
    # The script goes last so that the elements it fills exist when it runs.
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">{GENERATOR}'
            f"<title>{escape(title)}</title><style>{_asset('report.css')}</style></head><body>"
            f'<header><h1>{escape(title)}</h1><nav>{links}</nav><ul class="sources">{listed}</ul></header>'
            f'{"".join(sections)}<script>{_asset("report.js")}</script></body></html>\n')


# Marks a page editprobe wrote: `report --html FILE` replaces a file only when it has it (or,
# written before the mark existed, the page's own title).
GENERATOR = '<meta name="generator" content="editprobe report">'
_OLD_MARK = "<title>editprobe report</title>"


def check_html_output(path: str | Path) -> None:
    """``--html FILE``: new, or an HTML report editprobe wrote; never a directory or someone
    else's file."""
    from ..errors import OutputError
    from ..paths import check_writable

    path = Path(path)
    if path.is_dir():
        raise OutputError(f"--html {path}: is a directory; give the HTML file to write")
    if path.exists():
        try:
            with path.open(encoding="utf-8", errors="replace") as f:
                head = f.read(4096)
        except OSError as exc:
            raise OutputError(f"--html {path}: cannot read it: {exc.strerror or type(exc).__name__}") from None
        if GENERATOR not in head and _OLD_MARK not in head:
            raise OutputError(f"--html {path}: exists and is not an HTML report editprobe wrote; editprobe replaces "
                              "only its own: choose another file")
    check_writable(path.parent, "--html")


def write_html(path: str | Path, sources: Sources, summaries: Sequence[RunSummary] = ()) -> Path:
    """Write the page atomically (a reader never sees half a report); return its path."""
    from ..locks import FileLock

    path = Path(path)
    check_html_output(path)
    with FileLock(path.parent / f".{path.name}.lock", f"--html {path}", remove=True):
        write_text_atomic(path, build_html(sources, summaries))
    return path
