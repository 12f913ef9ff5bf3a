"""The experiment loop (docs/protocol.md#experimental-protocol), checkpointed so a killed run resumes.

For each dataset: every selected probe that applies measures the unedited model (once).
For each method on it: a sequential batch-editing run with the positive requests, after
which the probes that need the positively edited model measure it; the model restored;
the same with the negated requests when a probe needs them. Each probe then combines its
measurements into the method's row. Every batch is seeded from (seed, stage, batch) and
checkpointed, and every stage's measurements are stored, so a resumed run replays nothing
and equals an uninterrupted one.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from ..editing.registry import method_class
from ..errors import UserError, clip, quoted
from ..probes import build_negation_plan
from ..data.transform import IDENTITY
from ..data.options import dataset_notes, dataset_targets
from ..probes.base import EDIT_STAGES, Probe, ProbeContext, resolve_probe
from .advice import resume_advice, unanchored_warning
from .config import RunConfig, RunConfigError
from ..editing.target_cache import use_target_cache
from .preflight import check_datasets, check_model_and_device, check_remote_requirements
from .sequential import batch_seed, edit_sequentially, n_batches
from .store import RunDir, RunFailedError, package_versions
from .summary import SCHEMA_VERSION, DatasetSummary, ResultRow, RunSummary

__all__ = ["Experiment", "batch_seed", "run_experiment"]


def order_probes(probes: list[Probe]) -> list[Probe]:
    """The config's order, except that a probe comes after the probes it ``uses``."""
    ordered: list[Probe] = []
    pending = list(probes)
    while pending:
        names = {p.name for p in pending}
        ready = [p for p in pending if not (set(getattr(p, "uses", ())) & (names - {p.name}))]
        ordered.append(ready[0] if ready else pending[0])
        pending.remove(ordered[-1])
    return ordered


class Experiment:
    """One run: ``Experiment(config).run(resume=...)`` returns the summary dict."""

    def __init__(self, config: RunConfig, loaded=None, progress: bool = True, console: Console | None = None) -> None:
        self.config = config
        self.dir = RunDir(config.out)
        self._loaded = loaded  # a LoadedModel, for callers (tests) that already hold one
        self.progress = progress
        self.console = console or Console(stderr=True)
        self._records: dict[str, list] | None = None
        self._plans: dict = {}  # dataset spec -> its NegationPlan (built once, by check_inputs)
        self._warnings: list[str] = []
        self._probe_seconds: dict[str, dict[str, float]] = {}  # stage -> probe -> seconds of measure()

    @property
    def loaded(self):
        if self._loaded is None:
            from ..models import load_model

            self._loaded = load_model(self.config.model, dtype=self.config.dtype, device=self.config.device)
        return self._loaded

    def _hparams_choice(self, method: str, dataset: str | None = None):
        """The file of ``method`` for the run's ``dataset`` (a file tuned for its kind, when shipped)."""
        from ..editing.profiles import choose_hparams

        return choose_hparams(method, self.config.model, self.config.hparams, self.config.profile, dataset=dataset)

    def _hparams(self, method: str, dataset: str | None = None):
        from ..editing import resolve_hparams

        return resolve_hparams(method, self._hparams_choice(method, dataset).path, self._overrides(method))

    def _overrides(self, method: str) -> dict[str, Any]:
        """The --set values that are hyperparameters of ``method`` (a run may mix methods whose
        hyperparameters differ, e.g. RLEdit's hypernet beside MEMIT's v_lr)."""
        fields = method_class(method).hparams_cls.model_fields
        return {k: v for k, v in self.config.hparams_overrides().items() if k in fields}

    def _check_overrides(self) -> None:
        for key, value in self.config.overrides.items():
            if not any(key in method_class(m).hparams_cls.model_fields for m in self.config.methods):
                raise RunConfigError(f"--set {clip(key)}={quoted(value)}: not a hyperparameter of "
                                     f"{', '.join(self.config.methods)}")

    def check_inputs(self) -> list[str]:
        """Everything that can be checked before a model is loaded or a directory touched:
        methods and hparams, every record of every dataset, the negation table, the device
        and the model reference. Returns warnings about suspicious data (counts, not rows)."""
        if self._records is not None:
            return self._warnings
        self._check_overrides()
        for method in self.config.methods:
            for spec in self.config.datasets:
                self._hparams(method, spec)
        self._negate_fn()  # a bad table fails here, not after the baseline
        self.probes()  # unknown names and bad module:attribute specs fail here
        self._records, self._warnings = check_datasets(self.config.datasets, self.config.n, self._prompt_lengths(),
                                                       self.config.on_bad_record, self.config.dataset_options())
        self._plans = self._negation_plans()
        self._warnings += [line for spec, plan in self._plans.items() if (line := unanchored_warning(spec, plan))]
        if self._loaded is None:
            check_model_and_device(self.config.model, self.config.device)
        return self._warnings

    def _prompt_lengths(self):
        """The token cap on every query the run will ask of each record (runs/lengths.py)."""
        from ..data.negation import negate
        from .lengths import PromptLengths

        fn = self._negate_fn() or negate
        factcheck = self.config.factcheck if any(p.name == "factcheck" for p in self.probes()) else None
        return PromptLengths(self.config.model, self.config.max_prompt_tokens, loaded=self._loaded,
                             factcheck=factcheck, negated=lambda template, rid: _negated(fn(template, rid)))

    def _negation_plans(self) -> dict:
        """Each dataset's negation plan: a run scores the records whose template has a negated
        form (every setting is measured on the same records), so a dataset with none is refused
        here rather than finishing having edited nothing."""
        from ..data.errors import DataError

        negate = self._negate_fn()
        plans = {}
        for spec, records in (self._records or {}).items():
            plans[spec] = plan = build_negation_plan(records, negate)
            if records and plan.n_records == 0:
                first = plan.excluded[0]
                raise DataError(spec, f"none of its {len(records)} records has a template that can be negated "
                                      f"(e.g. record {first.record_id}: {first.template!r}); a run evaluates only "
                                      f"records with a negated query: give --negation-table (see `editprobe data "
                                      f"negate`)")
        return plans

    def preflight(self, resume: bool) -> list[str]:
        """:meth:`check_inputs` and the run directory's rules, still writing nothing."""
        warnings = self.check_inputs()
        self.dir.check(self.config, resume)
        return warnings

    def _negate_fn(self):
        """The default negation, with the config's user table (if any) taking precedence."""
        from ..data.negation import negation_function

        return negation_function(self.config.negation_table)

    # --- the loop -------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict[str, Any]:
        from ..editing import make_editor

        self.preflight(resume)
        loaded = self.loaded  # before the directory is touched: a failed load leaves none
        n_layers = loaded.adapter.n_layers(loaded.model)
        for method in self.config.methods:
            for spec in self.config.datasets:
                self._hparams(method, spec).check_model(n_layers)
                check_remote_requirements(make_editor(method, loaded.model, loaded.tokenizer,
                                                      self._hparams(method, spec), model_id=self.config.model))
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

    def probes(self) -> list[Probe]:
        """The config's probes, resolved (``module:attribute`` imported) and ordered."""
        return order_probes([resolve_probe(spec) for spec in self.config.probes])

    def _run(self) -> dict[str, Any]:
        started = time.perf_counter()
        datasets: dict[str, DatasetSummary] = {}
        results: list[ResultRow] = []
        samples: list[dict[str, Any]] = []
        assert self._records is not None
        model, tok = self.loaded.model, self.loaded.tokenizer
        keys = self.config.dataset_keys()
        for spec in self.config.datasets:
            dk = keys[spec]
            plan = self._plans[spec]
            # Every record is edited and measured; the negation settings are over the records
            # whose query can be negated (the plan), the other probes over all.
            ctx = ProbeContext(dataset=dk, records=self._records[spec], plan=plan, model=model,
                               tokenizer=tok, config=self.config)
            probes = [p for p in self.probes() if p.applies_to(ctx)]
            base = self._baseline(dk, ctx, probes)
            no_edit = {}
            for p in probes:
                if "baseline" in p.stages:
                    outcome, rows = p.no_edit(ctx, base[p.name])
                    if outcome is not None:
                        no_edit[p.name] = outcome
                    samples += [_sample(dk, "none", row) for row in rows]
            datasets[dk] = DatasetSummary(n_records=plan.n_records, n_excluded=plan.n_excluded, n_edited=len(ctx.records),
                                          negation_rules=plan.rule_counts(), negation_sources=plan.source_counts(),
                                          n_negated_edits=len(plan.negative_items), probes=[p.name for p in probes],
                                          targets=dataset_targets(ctx.records, self.config.dataset_options()),
                                          notes=dataset_notes(ctx.records),
                                          no_edit=no_edit)
            needed = [k for k in EDIT_STAGES if any(k in p.stages for p in probes)]
            for method in self.config.methods:
                # RLEdit runs the positive requests only (the paper: PP and PN)
                kinds = [k for k in needed if k in method_class(method).edit_stages]
                stages = {kind: self._edit_stage(spec, dk, method, kind, ctx, probes, base) for kind in kinds}
                outcomes = {}
                for p in probes:
                    states = {s: base[p.name] if s == "baseline" else stages[s]["probes"][p.name] for s in p.stages
                              if s == "baseline" or s in stages}
                    outcome, rows = p.combine(ctx, states, outcomes)
                    outcomes[p.name] = outcome
                    samples += [_sample(dk, method, row) for row in rows]
                hp = stages[kinds[0]]["hparams"] if kinds else self._hparams(method, spec).model_dump(mode="json")
                # None where K_p does not apply (ROME), so no table calls it "with K_p"
                kp = hp.get("preserve_previous") if method_class(method).uses_preserved_keys else None
                variant = stages[kinds[0]].get("variant") if kinds else None
                results.append(ResultRow(dataset=dk, method=method, variant=variant, preserve_previous=kp,
                                         probes=outcomes, hparams=hp, hparams_file=self._hparams_choice(method, spec).model_dump(mode="json"),
                                         c0=stages[kinds[0]].get("c0") if kinds else None,
                                         edit_reports={k: stages[k]["edit_reports"] for k in kinds}))
        summary = RunSummary(
            schema_version=SCHEMA_VERSION, config=self.config.model_dump(mode="json"), seed=self.config.seed,
            model_dtype=str(next(model.parameters()).dtype).removeprefix("torch."),
            versions=package_versions(), datasets=datasets, results=results,
            timings={"batches": self.dir.progress()["timings"], "probes": self._probe_seconds,
                     "total_s": time.perf_counter() - started},
        ).model_dump(mode="json")
        self.dir.finish(summary, samples)
        return summary

    def _baseline(self, dk: str, ctx: ProbeContext, probes: list[Probe]) -> dict[str, Any]:
        """Every probe's measurement of the unedited model (one stage, stored together)."""
        stage = f"{dk}__baseline"
        done = self.dir.load_stage(stage)
        if done is not None:
            self._probe_seconds[stage] = done.get("probe_seconds", {})
            return done["probes"]
        self.console.print(f"[bold]{escape(dk)}[/bold]: unedited model, {ctx.plan.n_records} records: "
                           f"{escape(', '.join(p.name for p in probes if 'baseline' in p.stages))}")
        states, seconds = _measure(ctx, "baseline", [p for p in probes if "baseline" in p.stages], None)
        self.dir.save_stage(stage, {"probes": states, "probe_seconds": seconds})
        self._probe_seconds[stage] = seconds
        return states

    def _edit_stage(self, spec: str, dk: str, method: str, kind: str, ctx: ProbeContext, probes: list[Probe],
                    base: dict[str, Any]) -> dict[str, Any]:
        """Edit with all ``kind`` requests in sequential batches (checkpoint after each), then
        let the probes that need this edited model measure it; the model is restored before
        returning."""
        stage = f"{dk}__{method}__{kind}"
        done = self.dir.load_stage(stage)
        if done is not None:
            self._probe_seconds[stage] = done.get("probe_seconds", {})
            return done
        from ..editing import make_editor

        model, tok = ctx.model, ctx.tokenizer
        editor = make_editor(method, model, tok, self._hparams(method, spec), model_id=self.config.model)
        cache = use_target_cache(editor, self.config.target_cache)
        requests = ctx.plan.requests_for(ctx.records) if kind == "positive" else ctx.plan.negative_requests()
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
        try:
            with Progress(console=self.console, disable=not self.progress, transient=True) as bar:
                task = bar.add_task(escape(f"{dk} {method} {kind}: editing"), total=total, completed=start)

                def after_batch(b: int, report, seconds: float) -> None:
                    # Losses are kept (they are deterministic); the timings go to progress.
                    reports[str(b)] = [r.model_dump() for r in report.requests]
                    timings[str(b)] = seconds
                    bar.advance(task)
                    if (b + 1) % self.config.checkpoint_every and b + 1 < total:
                        return
                    # Without stats: C0 (d_ff² per layer, GBs for 8B models) is read back from
                    # the covariance cache, not rewritten with every batch.
                    editor.save_state(self.dir.checkpoint(stage), include_stats=False)
                    self.dir.record_checkpoint(stage, b, timings, reports)

                edit_sequentially(editor, requests, bs, seed=self.config.seed, stage=stage, start=start,
                                  on_batch=after_batch)
            editor.finalize()  # once after the last batch (PRUNE); idempotent, so resume-safe
            measuring = [p for p in probes if kind in p.stages]
            self.console.print(escape(f"{dk} {method} {kind}: {', '.join(p.name for p in measuring)} on "
                                      f"{ctx.plan.n_records} records"))
            # An in-context editor edits through the prompt: the probes ask through its transform.
            ctx.transform = editor.prompt_transform()
            try:
                states, seconds = _measure(ctx, kind, measuring, base)
            finally:
                ctx.transform = IDENTITY
            self._probe_seconds[stage] = seconds
            result: dict[str, Any] = {
                "probes": states, "probe_seconds": seconds,
                **editor.provenance(),  # hparams, variant, c0
                "target_cache": cache.stats.as_dict() if cache is not None else None,
                # None: a kill fell between a checkpoint and its progress entry.
                "edit_reports": [reports.get(str(b)) for b in range(total)],
            }
        finally:
            editor.restore()
        self.dir.save_stage(stage, result)
        return result


def _negated(negation) -> str | None:
    """The negated template of a negation function's answer (a Negation, a string or None)."""
    return getattr(negation, "negated", negation)


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
    return Experiment(config, loaded=loaded, progress=progress).run(resume=resume)
