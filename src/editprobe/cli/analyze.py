"""`editprobe analyze`: the mechanism analysis of docs/protocol.md#mechanism-analysis — the editor's
targets m¹ (for p) and m² (for neg p) against the unedited MLP output m⁰, as numbers and as
PCA / t-SNE figures. Nothing is edited."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

from ..progress import progress
from .common import fail, one_method, one_method_option, parse_overrides, set_threads, warn

console = Console()


def _fmt(x: float | None, digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"


def analyze(
    model: str = typer.Option("smollm2-135m", help="built-in name, local directory or hub id"),
    methods: list[str] = one_method_option("memit", "the editing method, one: rome | memit | emmet | alphaedit | "
                                                    "pmet | ..."),
    data: str = typer.Option("counterfact-sample", help="dataset file or built-in name"),
    n: int = typer.Option(35, help="records to analyse: the first N whose unedited answers to p and neg(p) differ"),
    layer: Optional[int] = typer.Option(
        None, help="layer L (default: the method's critical layer; another layer is analysed as a one-layer "
                   "edit at L, since the target depends only on the critical layer)"),
    out: Path = typer.Option(..., help="output directory (analysis.json, vectors.safetensors, figures)"),
    hparams: Optional[str] = typer.Option(None, help="hparams YAML or model key (default: the model's shipped YAML)"),
    set_: list[str] = typer.Option([], "--set", help="override one hparam: key=value (YAML value)"),
    negation_table: Optional[str] = typer.Option(None, help="user YAML 'template: negated template'"),
    batch_size: int = typer.Option(16, help="requests per target optimization"),
    seed: int = typer.Option(0, help="torch seed and t-SNE random_state"),
    threads: Optional[int] = typer.Option(None, help="torch CPU threads"),
    dtype: Optional[str] = typer.Option(None, help="float32 | bfloat16 | float16"),
    device: Optional[str] = typer.Option(None, help="cpu | cuda | cuda:1 ..."),
) -> None:
    """Targets for "X is o*" vs "X is not o*": ‖m¹−m²‖/‖m¹−m⁰‖, cos(m¹−m⁰, m²−m⁰), PCA and t-SNE."""
    import torch

    from ..analysis.mechanism import analyze_mechanism, hparams_for_layer, write_analysis
    from ..data.negation import negate, negation_function
    from ..editing import make_editor, resolve_hparams
    from ..editing.settings.profiles import choose_hparams
    from ..models import load_model
    from ..runs.lengths import PromptLengths
    from ..workdir import WorkDir
    from ..runs.preflight import check_datasets, check_model_and_device

    method = one_method(methods, "analyze", "an analysis is of one method's targets: run analyze once per method")
    if n < 1:
        fail(f"--n must be at least 1, not {n}")
    if batch_size < 1:
        fail(f"--batch-size must be at least 1, not {batch_size}")
    set_threads(threads)
    torch.manual_seed(seed)
    overrides = parse_overrides(set_)
    # Cheap checks first: a typo should not cost a model load.
    # The file as run and edit choose it, without a dataset kind (the shipped default unless --hparams).
    hp = resolve_hparams(method, choose_hparams(method, model, hparams).path, overrides)
    negate_fn = negation_function(negation_table)  # None: the rules
    # It asks each record's prompt and its negation, each with the target: within the context.
    lengths = PromptLengths(model, probe_prompts=False, option=None, can_skip=False,
                            negated=lambda template, rid: (negate_fn or negate)(template, rid).negated)
    records, warnings = check_datasets([data], None, lengths)
    records = records[data]
    for line in warnings:
        warn(line)
    work = WorkDir(out, "analysis")
    work.check()  # a directory editprobe did not make as an analysis is never written into
    check_model_and_device(model, device)

    loaded = load_model(model, dtype=dtype, device=device)
    n_layers = loaded.adapter.n_layers(loaded.model)
    target_layer = hp.layers[-1] if layer is None else layer
    if not 0 <= target_layer < n_layers:
        fail(f"--layer {target_layer} is outside the model's layers 0..{n_layers - 1}")
    hp = hparams_for_layer(hp, target_layer)
    editor = make_editor(method, loaded.model, loaded.tokenizer, hp, model_id=model)
    with progress(f"targets at layer {editor.critical_layer}", label=method, console=console, unit="requests") as bar:

        def advance(done: int, total: int) -> None:
            bar.update(completed=done, total=total)

        try:
            result = analyze_mechanism(editor, records, n, negate_fn=negate_fn, batch_size=batch_size,
                                       on_progress=advance)
        except (FloatingPointError, ArithmeticError) as exc:
            fail(f"{method}: target optimization failed: {exc}")
    with work.hold():  # marked, and locked while the files are written
        paths = write_analysis(result, out, model=model, data=data, n_requested=n, seed=seed,
                               extra_metadata={"model": model, "data": data})
    _show(result, method, model, n, paths)


def _show(result, method: str, model: str, n: int, paths: dict) -> None:
    """The numbers as a table, the record selection, timings, and where the files are."""
    s = result.summary()
    sel = result.selection
    table = Table(title=f"{method} on {model}, layer {result.layer} ({result.site} site)")
    table.add_column("quantity")
    for col in ("mean", "median", "std"):
        table.add_column(col, justify="right")
    table.add_row("‖m¹−m²‖ / ‖m¹−m⁰‖", _fmt(s["ratio_mean"]), _fmt(s["ratio_median"]), _fmt(s["ratio_std"]))
    table.add_row("cos(m¹−m⁰, m²−m⁰)", _fmt(s["cos_mean"]), _fmt(s["cos_median"]), _fmt(s["cos_std"]))
    table.add_row("‖m¹−m⁰‖", _fmt(s["norm_m1_m0_mean"]), "", "")
    table.add_row("‖m²−m⁰‖", _fmt(s["norm_m2_m0_mean"]), "", "")
    console.print(table)
    console.print(f"records: {len(sel.items)} selected of {n} requested, {sel.n_scanned} scanned "
                  f"({sel.n_unnegatable} could not be negated); m⁰ differs between p and neg(p) for "
                  f"{s['m0_differs_between_p_and_negp']}")
    t = result.timings
    console.print(f"time: selection {t['select_s']:.1f}s, m⁰ {t['m0_s']:.1f}s, targets {t['targets_s']:.1f}s")
    for name, path in paths.items():
        console.print(f"{name}: {path}", highlight=False, soft_wrap=True)


def register(app: typer.Typer) -> None:
    app.command("analyze")(analyze)
