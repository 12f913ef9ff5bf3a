"""`editprobe demo`: the main job on a fresh machine (built-in model and data)."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.table import Table

console = Console()


def demo(
    n: int = typer.Option(10, help="records to show"),
    model: str = typer.Option("smollm2-135m", help="model (built-in by default)"),
    data: str = typer.Option("counterfact-sample", help="dataset (built-in sample by default)"),
    max_new_tokens: int = typer.Option(6, help="tokens generated per query"),
) -> None:
    """Load the built-in model and CounterFact sample; show queries, greedy answers, old targets."""
    import torch

    from ..data import load_records
    from ..models import load_model
    from ..probes.exact import exact_match_batch

    loaded = load_model(model)
    records = load_records(data, limit=n).records
    known = exact_match_batch(loaded.model, loaded.tokenizer, [(r.query, r.target_true) for r in records])
    table = Table("query", "greedy answer", "old target", "knows it", title=f"{model} on {data}")
    for record, ok in zip(records, known):
        ids = loaded.tokenizer(record.query, return_tensors="pt")
        with torch.no_grad():
            out = loaded.model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                                        pad_token_id=loaded.tokenizer.pad_token_id)
        answer = loaded.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True)
        table.add_row(record.query, answer.strip().replace("\n", " "), record.target_true or "-", "yes" if ok else "no")
    console.print(table)
    console.print(f"{sum(known)}/{len(records)} old targets exact-matched (teacher-forced greedy).")


def register(app: typer.Typer) -> None:
    app.command("demo")(demo)
