"""`editprobe edit`: sequential batch editing from a dataset, with efficacy before/after."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.progress import Progress

from .common import fail, parse_overrides

console = Console()


def edit(
    model: str = typer.Option("smollm2-135m", help="built-in name, local directory or hub id"),
    method: str = typer.Option("memit", help="rome | memit | emmet | alphaedit | ..."),
    data: str = typer.Option("counterfact-sample", help="dataset file or built-in name"),
    n: int = typer.Option(100, help="number of records to edit"),
    batch_size: int = typer.Option(50, help="requests per batch (edits accumulate across batches)"),
    out: Path = typer.Option(..., help="output directory (editor state, deltas, report)"),
    hparams: Optional[str] = typer.Option(None, help="hparams YAML or model key (default: the model's shipped YAML)"),
    set_: list[str] = typer.Option([], "--set", help="override one hparam: key=value (YAML value)"),
    preserve_previous: Optional[bool] = typer.Option(None, "--preserve-previous/--no-preserve-previous"),
    dtype: Optional[str] = typer.Option(None, help="float32 | bfloat16 | float16"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | cuda:1 ..."),
) -> None:
    """Edit N records sequentially in batches; save the editor state; print efficacy."""
    from ..data import load_records
    from ..editing import HParamsError, make_editor, resolve_hparams
    from ..editing.keys_model import hparams_key
    from ..models import load_model
    from ..paths import write_json_atomic
    from ..probes.exact import FAST_LABEL, exact_match_batch

    overrides = parse_overrides(set_)
    if preserve_previous is not None:
        overrides["preserve_previous"] = preserve_previous
    try:
        # Cheap checks first: a typo should not cost a model load.
        hp = resolve_hparams(method, hparams or hparams_key(model), overrides)
        records = load_records(data, limit=n).records
        loaded = load_model(model, dtype=dtype, device=device)
        editor = make_editor(method, loaded.model, loaded.tokenizer, hp, model_id=model)
    except (ValueError, OSError, HParamsError) as exc:
        fail(exc)
    requests = [r.request() for r in records]
    pairs = [(r.query, r.target) for r in requests]
    before = exact_match_batch(loaded.model, loaded.tokenizer, pairs)
    reports = []
    with Progress(console=console) as progress:
        task = progress.add_task(f"{method}: editing", total=len(requests))
        for start in range(0, len(requests), batch_size):
            batch = requests[start : start + batch_size]
            try:
                reports.append(editor.apply(batch).model_dump())
            except (ValueError, ArithmeticError) as exc:
                fail(exc)
            progress.advance(task, len(batch))
    editor.finalize()  # e.g. PRUNE restrains the accumulated edit once, after the last batch
    after = exact_match_batch(loaded.model, loaded.tokenizer, pairs)
    editor.save_state(out / "state")
    eff_before = 100 * sum(before) / len(before)
    eff_after = 100 * sum(after) / len(after)
    write_json_atomic(out / "report.json", {
        "model": model, "method": method, "data": data, "n": len(requests), "batch_size": batch_size,
        "hparams": editor.hp.model_dump(mode="json"), "metric": FAST_LABEL,
        "efficacy_before": eff_before, "efficacy_after": eff_after, "batches": reports,
    })
    console.print(f"{method} on {model}: {len(requests)} edits in batches of {batch_size}")
    console.print(f"PP efficacy ({FAST_LABEL}): before {eff_before:.1f}%  after {eff_after:.1f}%")
    console.print(f"state and report in {out}")


def register(app: typer.Typer) -> None:
    app.command("edit")(edit)
