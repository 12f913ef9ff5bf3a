"""`editprobe data ...`: inspect a dataset file, list built-in data."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..data.checks import suspicious_records
from .common import OnBadRecordChoice, fail, warn

if TYPE_CHECKING:
    from ..data import EditRecord, LoadResult

app = typer.Typer(no_args_is_help=True)
console = Console()

MAX_PROBLEM_ROWS = 50
N_EXAMPLES = 2


def _fail(message: str) -> None:
    fail(message)  # one plain line on stderr, exit code 2


@app.command("inspect")
def inspect_cmd(
    file: str = typer.Argument(..., help="dataset file (JSON array or JSON Lines) or a built-in name, e.g. counterfact-sample"),
    format: str | None = typer.Option(None, "--format", "-f", help="format name; detected from the content by default"),
    on_bad_record: OnBadRecordChoice = typer.Option(
        OnBadRecordChoice.error, "--on-bad-record", help="stop at the first bad record, or skip and list them all"
    ),
    limit: int | None = typer.Option(None, "--limit", min=0, help="read only the first N good entries"),
) -> None:
    """Detected format, record counts, two example records and the problems found."""
    from ..data import DATASET_FORMATS, DataError, load_records

    try:
        result = load_records(file, format=format, on_bad_record=on_bad_record.value, limit=limit)
    except DataError as exc:
        hint = " (use --on-bad-record skip to list every bad record)" if exc.index is not None else ""
        _fail(f"{exc}{hint}")
        return
    records = result.records
    detected = "given" if format else "detected"
    console.print(f"[bold]{escape(str(result.path))}[/bold]")
    description = escape(DATASET_FORMATS[result.format].description)
    console.print(f"format: [cyan]{escape(result.format)}[/cyan] ({detected}; {description})")

    counts = Table("", "count", title="counts", title_justify="left")
    counts.add_row("entries in file", str(result.n_total))
    counts.add_row("records loaded", str(len(records)))
    counts.add_row("entries skipped", str(result.n_skipped))
    counts.add_row("with paraphrases", str(sum(bool(r.paraphrase_prompts) for r in records)))
    counts.add_row("with neighborhood", str(sum(bool(r.neighborhood) for r in records)))
    counts.add_row("with portability", str(sum(bool(r.portability) for r in records)))
    counts.add_row("with old target", str(sum(r.target_true is not None for r in records)))
    counts.add_row("question prompts", str(sum(r.is_question for r in records)))
    console.print(counts)

    for rec in records[:N_EXAMPLES]:
        console.print(_example_table(rec))

    _print_problems(result)
    if not records:
        console.print("[yellow]warning:[/yellow] no usable records")
    for line in suspicious_records(records, str(result.path)):
        warn(line)


def _print_problems(result: LoadResult) -> None:
    """The skipped records (a table), and the fields the format does not read (one line)."""
    ignored = result.unread_warning()
    if result.skipped:
        problems = Table("record (0-based)", "field", "message", title="problems", title_justify="left")
        for bad in result.skipped[:MAX_PROBLEM_ROWS]:
            problems.add_row(str(bad.index), escape(bad.field), escape(bad.message))
        console.print(problems)
        if result.n_skipped > MAX_PROBLEM_ROWS:
            console.print(f"... and {result.n_skipped - MAX_PROBLEM_ROWS} more")
    if ignored:
        # Plain text, never wrapped: the field names are what a user greps for.
        console.print(f"{'' if result.skipped else 'problems: '}fields not read: {escape(ignored)}", soft_wrap=True)
    elif not result.skipped:
        console.print("problems: none")


def _example_table(rec: EditRecord) -> Table:
    # Dataset text is escaped: a "[...]" in a prompt must not be read as rich markup.
    table = Table("field", "value", title=escape(f"record {rec.id}"), title_justify="left", show_header=False)
    table.add_row("subject", escape(rec.subject))
    table.add_row("template", escape(rec.template))
    table.add_row("target_new", escape(rec.target_new))
    table.add_row("target_true", escape(rec.target_true or "-"))
    if rec.case_id is not None:
        table.add_row("case_id", escape(rec.case_id))
    first_para = f": {rec.paraphrase_prompts[0]}" if rec.paraphrase_prompts else ""
    table.add_row("paraphrases", escape(f"{len(rec.paraphrase_prompts)}{first_para}"))
    for label, probes in (("neighborhood", rec.neighborhood), ("portability", rec.portability)):
        first = f": [{probes[0].kind}] {probes[0].prompt} -> {probes[0].answer}" if probes else ""
        table.add_row(label, escape(f"{len(probes)}{first}"))
    return table


@app.command("negate")
def negate_cmd(
    file: str = typer.Argument(..., help="dataset file or built-in name, e.g. counterfact-sample"),
    table: str | None = typer.Option(None, "--table", help="user YAML 'template: negated template' (overrides the rules)"),
    format: str | None = typer.Option(None, "--format", "-f", help="format name; detected from the content by default"),
    limit: int | None = typer.Option(None, "--limit", min=0, help="read only the first N good entries"),
    csv: str | None = typer.Option(None, "--csv", help="also write template, relation, negated, rule, reason here"),
    compare: bool = typer.Option(False, "--compare", help="compare each record's own negated prompt (the paper's "
                                 "files carry one) with the rules': identical / contraction only / different / not "
                                 "negatable, with examples"),
) -> None:
    """Every distinct template with its negation and the rule that made it; the templates no
    rule can negate are listed (they leave the negation settings, never kept positive).
    With --compare: how far the file's own negated prompts agree with the rules."""
    import pandas as pd

    from ..data import DataError, load_records
    from ..data.negation import load_negation_table, negate_all
    from ..paths import write_text_atomic

    try:
        overrides = load_negation_table(table) if table else None
        records = load_records(file, format=format, limit=limit).records
    except DataError as exc:
        _fail(str(exc))
        return
    if compare:
        _compare(file, records, overrides)
        return
    report = negate_all(((r.template, r.relation_id) for r in records), overrides=overrides)
    rows = [{"template": n.template, "relation": rid or "", "negated": n.negated or "", "rule": n.rule, "reason": n.reason}
            for (_, rid), n in zip(_distinct(records), report.results)]
    out = Table("template", "relation", "negated", "rule", title=f"{len(rows)} distinct templates", title_justify="left")
    for row in rows:
        negated = escape(row["negated"]) if row["negated"] else f"[red]not negated: {escape(row['reason'])}[/red]"
        out.add_row(escape(row["template"]), escape(row["relation"]), negated, escape(row["rule"]))
    console.print(out)
    console.print(escape(report.summary()))
    if csv:
        write_text_atomic(csv, pd.DataFrame(rows).to_csv(index=False))
        console.print(f"written: {escape(csv)}")


def _compare(file: str, records, overrides) -> None:
    """``negate --compare``: the counts per category, then the first examples of each."""
    from ..data.negation import negate
    from ..data.negation_compare import CATEGORIES, compare_negations

    fn = (lambda template, rid: negate(template, rid, overrides=overrides)) if overrides else None
    result = compare_negations(records, fn)
    if not result.n_compared:
        _fail(f"{file}: none of its {len(records)} records carries its own negated prompt (negetive_prompt or "
              "negated_prompt): nothing to compare")
        return
    typer.echo(f"{result.n_compared} records with their own negated prompt"
               + (f" ({result.n_without} without one, not compared)" if result.n_without else ""))
    for name in CATEGORIES:
        typer.echo(f"  {name}: {result.counts[name]} ({result.share(name):.1f}%)")
    for name, examples in result.examples.items():
        typer.echo(f"{name}, e.g.:")
        for ex in examples:
            typer.echo(f"  record {ex.record_id}: file {ex.own!r} | rules {ex.rules!r}")


def _distinct(records) -> list[tuple[str, str | None]]:
    """(template, relation_id) pairs in first-seen order — negate_all's order."""
    return list(dict.fromkeys((r.template, r.relation_id) for r in records))


@app.command("list")
def list_cmd() -> None:
    """Built-in datasets and corpora, and the dataset formats that are recognised."""
    from ..data import BUILTIN_CORPORA, BUILTIN_DATASETS, DATASET_FORMATS

    table = Table("name", "kind", "license", "description")
    for kind, items in (("dataset", BUILTIN_DATASETS), ("corpus", BUILTIN_CORPORA)):
        for item in items.values():
            table.add_row(item.name, kind, item.license, item.description)
    console.print(table)
    formats = Table("format", "shape (detection order)")
    for fmt in DATASET_FORMATS.values():
        formats.add_row(fmt.name, fmt.description)
    console.print(formats)
