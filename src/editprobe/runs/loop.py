"""The experiment loop (docs/protocol.md#experimental-protocol), checkpointed so a killed run resumes.

For each dataset: every selected probe that applies measures the unedited model (once).
For each method on it: a sequential batch-editing run with the positive requests, after
which the probes that need the positively edited model measure it; the model restored;
the same with the negated requests when a probe needs them. Each probe then combines its
measurements into the method's row. Every batch is seeded from (seed, stage, batch) and
checkpointed, and every stage's measurements are stored, so a resumed run replays nothing
and equals an uninterrupted one.

The loop resolves nothing: the run's plan (runs/plan.py: datasets, hyperparameters, negation
plans, probes) is built once before the model loads, and each stage is handed its dataset's
and method's part of it.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console

from ..errors import UserError
from ..forms import QueryForm, trained_metrics
from ..data.options import dataset_notes, dataset_targets
from ..probes.base import EDIT_STAGES, Probe, ProbeContext
from .advice import resume_advice
from .config import RunConfig
from ..editing.lte.target_cache import use_target_cache
from .plan import DatasetPlan, MethodPlan, RunPlan
from .curve import HeldOut, StageCurve, measure_heldout_baseline
from .preflight import check_remote_requirements
from .records import record_lines
from .sequential import batch_seed, edit_sequentially, n_batches
from .store import RunDir, RunFailedError, package_versions
from ..probes.intervals import settings as interval_settings
from ..progress import announce, progress as progress_reporter
from .summary import SCHEMA_VERSION, DatasetSummary, ResultRow, RunSummary

__all__ = ["Experiment", "batch_seed", "run_experiment"]


class Experiment:
    """One run: ``Experiment(plan).run(resume=...)`` returns its :class:`RunSummary`.
    ``Experiment(config)`` builds the plan (runs/plan.py) when it is first needed."""

    def __init__(self, plan: RunPlan | RunConfig, loaded=None, progress: bool = True,
                 console: Console | None = None, on_line: Callable[[str], None] | None = None) -> None:
        self._plan = plan if isinstance(plan, RunPlan) else None
        self.config: RunConfig = plan.config if isinstance(plan, RunPlan) else plan
        self.dir = RunDir(self.config.out)
        self._loaded = loaded  # a LoadedModel, for callers (tests) that already hold one
        self.progress = progress
        self.console = console or Console(stderr=True)
        self.on_line = on_line  # each stage's line and each plain progress line (a study's status)
        self._probe_seconds: dict[str, dict[str, float]] = {}  # stage -> probe -> seconds of measure()
        self._records: list[dict[str, Any]] = []  # per-record values (runs/records.py), filled row by row
        self._heldout: HeldOut | None = None  # the dataset in flight's held-out slice (eval: every)

    @property
    def plan(self) -> RunPlan:
        if self._plan is None:
            self._plan = RunPlan.build(self.config, loaded=self._loaded)
        return self._plan

    @property
    def loaded(self):
        if self._loaded is None:
            from ..models import load_model

            self._loaded = load_model(self.config.model, dtype=self.config.dtype, device=self.config.device)
        return self._loaded

    def check_inputs(self) -> list[str]:
        """Everything that can be checked before a model is loaded or a directory touched (the
        plan, RunPlan.build). Returns warnings about suspicious data (counts, not rows)."""
        return list(self.plan.warnings)

    def preflight(self, resume: bool) -> list[str]:
        """:meth:`check_inputs` and the run directory's rules, still writing nothing."""
        warnings = self.check_inputs()
        self.dir.check(self.config, resume)
        return warnings

    def probes(self) -> list[Probe]:
        """The config's probes, resolved (``module:attribute`` imported) and ordered."""
        return list(self.plan.probes)

    # --- the loop -------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> RunSummary:
        self.preflight(resume)
        for method in self.plan.methods.values():  # data an editor trains on, disjoint from the records (WISE)
            for dataset in self.plan.datasets:
                method.editor_cls.check_records(method.hparams, list(dataset.records))
        loaded = self.loaded  # before the directory is touched: a failed load leaves none
        n_layers = loaded.adapter.n_layers(loaded.model)
        for method in self.plan.methods.values():
            method.hparams.check_model(n_layers)
            # what the editor will fetch (a remote C0 corpus not cached yet) must be reachable
            # now, before any work; asked of the class, so no editor is built for it
            check_remote_requirements(method.editor_cls.requirements(method.hparams, loaded.model, loaded.tokenizer,
                                                                     model_id=self.config.model))
        try:
            self.dir.open(self.config, resume)  # inside: Ctrl-C may land once the lock is held
            return self._run()
        except BaseException as exc:
            if not self.dir.work.locked:  # open refused (and released what it took)
                raise
            self.dir.abandon()  # no work saved: nothing left behind to block the next run
            if isinstance(exc, UserError) and self.dir.has_work:
                raise RunFailedError(f"{exc} ({resume_advice(exc, self.config.out)})") from exc
            raise
        finally:
            self.dir.close()

    def _run(self) -> RunSummary:
        started = time.perf_counter()
        datasets: dict[str, DatasetSummary] = {}
        results: list[ResultRow] = []
        samples: list[dict[str, Any]] = []
        self._records = []
        model = self.loaded.model
        for dataset in self.plan.datasets:
            datasets[dataset.key] = self._dataset(dataset, results, samples)
        summary = RunSummary(
            schema_version=SCHEMA_VERSION, config=self.config.model_dump(mode="json"), seed=self.config.seed,
            model_dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
            versions=package_versions(), datasets=datasets, results=results,
            timings={"batches": self.dir.progress()["timings"], "probes": self._probe_seconds,
                     "total_s": time.perf_counter() - started,
                     "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},  # the report's run date
            intervals=interval_settings(),
        )
        self.dir.finish(summary.model_dump(mode="json"), samples, self._records)
        return summary

    def _dataset(self, dataset: DatasetPlan, results: list[ResultRow], samples: list[dict[str, Any]]
                 ) -> DatasetSummary:
        """The baseline of one dataset and the row of every method on it (appended to
        ``results``, their samples to ``samples``); returns the dataset's summary."""
        dk, plan = dataset.key, dataset.negation
        # Every record is edited and measured; the negation settings are over the records
        # whose query can be negated (the plan), the other probes over all.
        ctx = ProbeContext(dataset=dk, records=list(dataset.records), plan=plan, model=self.loaded.model,
                           tokenizer=self.loaded.tokenizer, config=self.config)
        probes = [p for p in self.plan.probes if p.applies_to(ctx)]
        base = self._baseline(dk, ctx, probes)
        self._heldout = self._heldout_baseline(dataset) if self.config.eval == "every" else None
        no_edit = ctx.no_edit  # filled in probe order: a probe's no_edit may read those before it
        for p in probes:
            if "baseline" in p.stages:
                outcome, rows = p.no_edit(ctx, base[p.name])
                if outcome is not None:
                    no_edit[p.name] = outcome
                samples += [_sample(dk, "none", row) for row in rows]
        self._records += record_lines(dk, "none", None, None, no_edit)
        needed = [k for k in EDIT_STAGES if any(k in p.stages for p in probes)]
        for method in self.config.methods:
            results.append(self._method_row(dataset, self.plan.method(method, dataset), ctx, probes, base, needed,
                                            samples))
        return DatasetSummary(n_records=plan.n_records, n_excluded=plan.n_excluded, n_edited=len(ctx.records),
                              negation_rules=plan.rule_counts(), negation_sources=plan.source_counts(),
                              n_negated_edits=len(plan.negative_items), probes=[p.name for p in probes],
                              targets=dataset_targets(ctx.records, self.config.dataset_options()),
                              notes=dataset_notes(ctx.records), no_edit=no_edit)

    def _method_row(self, dataset: DatasetPlan, method: MethodPlan, ctx: ProbeContext, probes: list[Probe],
                    base: dict[str, Any], needed: list, samples: list[dict[str, Any]]) -> ResultRow:
        """The method's editing stages on the dataset and its row of every probe's outcome."""
        kinds = method.stages(needed)  # RLEdit runs the positive requests only (the paper: PP and PN)
        stages = {kind: self._edit_stage(dataset, method, kind, ctx, probes, base) for kind in kinds}
        outcomes = {}
        for p in probes:
            states = {s: base[p.name] if s == "baseline" else stages[s]["probes"][p.name] for s in p.stages
                      if s == "baseline" or s in stages}
            outcome, rows = p.combine(ctx, states, outcomes)
            outcomes[p.name] = outcome
            samples += [_sample(dataset.key, method.method, row) for row in rows]
        first = stages[kinds[0]] if kinds else {}
        hp = first["hparams"] if kinds else method.hparams.model_dump(mode="json")
        # None where K_p does not apply (ROME), so no table calls it "with K_p"
        kp = hp.get("preserve_previous") if method.editor_cls.uses_preserved_keys else None
        self._records += record_lines(dataset.key, method.method, first.get("variant"), kp, outcomes)
        trained = frozenset(QueryForm(f) for k in kinds for f in stages[k].get("trained_forms", []))
        cells = {p.name: marked for p in probes if (marked := trained_metrics(p.metric_forms, trained))}
        return ResultRow(dataset=dataset.key, method=method.method, variant=first.get("variant"), preserve_previous=kp,
                         probes=outcomes, hparams=hp, hparams_file=method.choice.model_dump(mode="json"),
                         c0=first.get("c0"), edit_reports={k: stages[k]["edit_reports"] for k in kinds},
                         curve=[point for k in kinds for point in stages[k].get("curve", [])],
                         trained_forms=sorted(f.value for f in trained), trained_cells=cells)

    def _announce(self, text: str, bold: str = "") -> None:
        """A stage's line: on the console (and a log stdout goes to: progress.announce) and to
        ``on_line``."""
        announce(self.console, text, bold)
        if self.on_line is not None:
            self.on_line(text)

    def _baseline(self, dk: str, ctx: ProbeContext, probes: list[Probe]) -> dict[str, Any]:
        """Every probe's measurement of the unedited model (one stage, stored together)."""
        stage = f"{dk}__baseline"
        done = self.dir.load_stage(stage)
        if done is not None:
            self._probe_seconds[stage] = done.get("probe_seconds", {})
            return done["probes"]
        self._announce(f"{dk}: unedited model, {ctx.plan.n_records} records: "
                       f"{', '.join(p.name for p in probes if 'baseline' in p.stages)}", bold=dk)
        states, seconds = _measure(ctx, "baseline", [p for p in probes if "baseline" in p.stages], None)
        self.dir.save_stage(stage, {"probes": states, "probe_seconds": seconds})
        self._probe_seconds[stage] = seconds
        return states

    def _heldout_baseline(self, dataset: DatasetPlan) -> HeldOut | None:
        """The curve's held-out slice of the dataset, measured on the unedited model (once)."""
        if not dataset.heldout:
            return None
        hctx = ProbeContext(dataset=dataset.key, records=list(dataset.heldout), plan=dataset.heldout_negation,
                            model=self.loaded.model, tokenizer=self.loaded.tokenizer, config=self.config)
        return measure_heldout_baseline(self.dir, f"{dataset.key}__heldout__baseline", hctx,
                                        list(self.plan.heldout_probes))

    def _stage_curve(self, stage: str, kind: str, ctx: ProbeContext, base: dict[str, Any],
                     requests: list) -> StageCurve | None:
        if self.config.eval != "every":
            return None
        probes = [p for p in self.plan.curve_probes if kind in p.stages and p.name in base]
        return StageCurve(self.dir, stage, kind, self.config.eval_every or 1,
                          n_batches(len(requests), self.config.batch_size), self.config.batch_size,
                          [r.id for r in requests], ctx, probes, base, self._heldout)

    def _edit_stage(self, dataset: DatasetPlan, method: MethodPlan, kind: str, ctx: ProbeContext,
                    probes: list[Probe], base: dict[str, Any]) -> dict[str, Any]:
        """Edit with all ``kind`` requests in sequential batches (checkpoint after each), then
        let the probes that need this edited model measure it; the model is restored before
        returning."""
        label = f"{dataset.key} {method.method} {kind}"
        stage = f"{dataset.key}__{method.method}__{kind}"
        done = self.dir.load_stage(stage)
        if done is not None:
            self._probe_seconds[stage] = done.get("probe_seconds", {})
            return done
        editor = method.make_editor(ctx.model, ctx.tokenizer, model_id=self.config.model)
        cache = use_target_cache(editor, self.config.target_cache)
        plan = dataset.negation
        requests = plan.requests_for(ctx.records) if kind == "positive" else plan.negative_requests()
        curve = self._stage_curve(stage, kind, ctx, base, requests)
        try:
            reports = self._edit_batches(editor, stage, label, requests, curve)
            editor.finalize()  # once after the last batch (PRUNE); idempotent, so resume-safe
            if kind == "positive" and self.config.save_model:
                self._save_model(dataset, method, editor, requests)
            measuring = [p for p in probes if kind in p.stages]
            self._announce(f"{label}: {', '.join(p.name for p in measuring)} on {plan.n_records} records")
            # An in-context editor edits through the prompt: this stage's probes ask through its transform.
            asked = dataclasses.replace(ctx, transform=editor.prompt_transform())
            states, seconds = _measure(asked, kind, measuring, base)
            self._probe_seconds[stage] = seconds
            result: dict[str, Any] = {
                "probes": states, "probe_seconds": seconds,
                **editor.provenance(),  # hparams, variant, c0
                "trained_forms": sorted(form.value for form in editor.trained_forms()),
                "target_cache": cache.stats.as_dict() if cache is not None else None,
                "edit_reports": reports,
                "curve": curve.points() if curve is not None else [],
            }
        finally:
            editor.restore()
        self.dir.save_stage(stage, result)
        return result

    def _save_model(self, dataset: DatasetPlan, method: MethodPlan, editor, requests: list) -> None:
        """The positively edited model as a checkpoint (runs/saved_models.py), before the stage's
        result: a run killed between the two saves it again on resume."""
        from .saved_models import made_by, model_dtype, run_model_dir, save_model

        cfg, model = self.config, self.loaded.model
        fields = made_by(made_with="run", model=cfg.model, method=method.method, editor=editor, data=dataset.spec,
                         n=cfg.n, records=requests, seed=cfg.seed, batch_size=cfg.batch_size, dtype=model_dtype(model),
                         options={"sample": cfg.sample, "negation_table": cfg.negation_table,
                                  "zsre_target": cfg.zsre_target, "mquake_unit": cfg.mquake_unit})
        save_model(model, self.loaded.tokenizer, run_model_dir(self.dir.root, dataset.key, method.method), fields)

    def _edit_batches(self, editor, stage: str, label: str, requests: list, curve: StageCurve | None = None
                      ) -> list[Any]:
        """Every batch of the stage from its last checkpoint on, checkpointed after every
        ``checkpoint_every``-th and the last (a curve point, when due, is measured before the
        checkpoint: runs/curve.py); returns each batch's request reports."""
        bs = self.config.batch_size
        total = n_batches(len(requests), bs)
        start = self.dir.batches_checkpointed(stage)
        if start:
            # C0 (and AlphaEdit's projectors) must come from the unedited model, before the
            # checkpoint's deltas are applied: checkpoints leave them to the covariance cache.
            editor.prepare()
            editor.load_state(self.dir.checkpoint(stage))
        progress = self.dir.progress()
        reports = dict(progress.get("reports", {}).get(stage, {}))
        timings = dict(progress["timings"].get(stage, {}))
        n = len(requests)
        with progress_reporter("editing", total, start, label=label, console=self.console, enabled=self.progress,
                               unit="batch", counts=lambda b: f"{min(b * bs, n)}/{n} records",
                               listener=self.on_line) as bar:

            def after_batch(b: int, report, seconds: float) -> None:
                # Losses are kept (they are deterministic); the timings go to progress.
                reports[str(b)] = [r.model_dump() for r in report.requests]
                timings[str(b)] = seconds
                if bar is not None:
                    bar.advance()
                if curve is not None:
                    curve.evaluate(editor, b)
                if (b + 1) % self.config.checkpoint_every and b + 1 < total:
                    return
                # Without stats: C0 (d_ff² per layer, GBs for 8B models) is read back from
                # the covariance cache, not rewritten with every batch.
                editor.save_state(self.dir.checkpoint(stage), include_stats=False)
                self.dir.record_checkpoint(stage, b, timings, reports)

            edit_sequentially(editor, requests, bs, seed=self.config.seed, stage=stage, start=start,
                              on_batch=after_batch)
        # None: a kill fell between a checkpoint and its progress entry.
        return [reports.get(str(b)) for b in range(total)]


# The fields every line of samples.jsonl has (the HTML report's sample browser reads them);
# a probe's own fields follow.
SAMPLE_FIELDS = ("edited_with", "record_id", "setting", "probe", "query", "expected", "generated", "match")


def _sample(dk: str, method: str, row: dict[str, Any]) -> dict[str, Any]:
    return {"dataset": dk, "method": method, **{k: row.get(k) for k in SAMPLE_FIELDS}, **row}


def _measure(ctx: ProbeContext, stage: str, probes: list[Probe], baseline: dict[str, Any] | None
             ) -> tuple[dict[str, Any], dict[str, float]]:
    """Each probe's measurement of the model in its current state, and how long it took."""
    states, seconds = {}, {}
    for p in probes:
        t = time.perf_counter()
        states[p.name] = p.measure(ctx, stage, (baseline or {}).get(p.name))  # type: ignore[arg-type]
        seconds[p.name] = round(time.perf_counter() - t, 3)
    return states, seconds


def run_experiment(config: RunConfig, resume: bool = False, loaded=None, progress: bool = True) -> dict[str, Any]:
    """The run of ``config`` (what ``editprobe run`` does): every method on every dataset,
    edited in batches, measured by the probes, checkpointed after every
    ``checkpoint_every`` batches, written to ``config.out``.

    Args:
        config: The run's settings.
        resume: Continue the run in ``config.out`` from its checkpoints (the config must be
            the one it started with); False: ``config.out`` must not hold a run yet.
        loaded: The model already loaded (``load_model``'s result) instead of loading
            ``config.model``.
        progress: Show progress (bars on a terminal).

    Returns:
        The run's summary as ``summary.json`` holds it (a dict: the config, one result row
        per dataset and method with every probe's metrics, timings).

    Raises:
        UserError: Anything wrong with the config, the data, the model or the output
            directory, found before work starts where it can be (one line).

    Examples:
        Not run here (it downloads the built-in model and edits 100 records):

        ```python
        from editprobe.runs import RunConfig, run_experiment
        config = RunConfig(methods=("memit", "alphaedit"), n=100, batch_size=50, out="runs/first")
        summary = run_experiment(config)
        ```
    """
    return Experiment(config, loaded=loaded, progress=progress).run(resume=resume).model_dump(mode="json")
