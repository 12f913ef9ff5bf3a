"""The experiment loop (evaluation-protocol.md §2–4), checkpointed so a killed run resumes.

For each dataset: the no-edit baseline and the unedited model's fact-check answers (once).
For each method on it: a sequential batch-editing run with the positive requests, scored on
the positive and the negated queries and fact-checked; the model restored; the same with the
negated requests. Every batch is seeded from (seed, stage, batch) and checkpointed, so a
resumed run replays nothing and equals an uninterrupted one.
"""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.progress import Progress

from ..probes import (
    FactCheckReply, NegationPlan, NegationRun, ask_records, build_negation_plan, fact_check_result,
    negation_scores, no_edit_baseline, no_edit_fact_check, score_negation_run,
)
from ..errors import UserError
from .config import RunConfig, dataset_key
from .preflight import check_datasets, check_model_and_device
from .sequential import batch_seed, edit_sequentially, n_batches
from .store import RunDir, RunFailedError, package_versions

__all__ = ["Experiment", "batch_seed", "run_experiment"]

KINDS = ("positive", "negative")


def _records_of(plan: NegationPlan):
    return [item.record for item in plan.items]


def _fc_dump(replies: list[FactCheckReply]) -> list[dict]:
    return [r.model_dump(mode="json") for r in replies]


def _fc_load(rows: list[dict]) -> list[FactCheckReply]:
    return [FactCheckReply.model_validate(r) for r in rows]


class Experiment:
    """One run: ``Experiment(config).run(resume=...)`` returns the summary dict."""

    def __init__(self, config: RunConfig, loaded=None, progress: bool = True, console: Console | None = None) -> None:
        self.config = config
        self.dir = RunDir(config.out)
        self._loaded = loaded  # a LoadedModel, for callers (tests) that already hold one
        self.progress = progress
        self.console = console or Console(stderr=True)
        self._records: dict[str, list] | None = None
        self._warnings: list[str] = []

    @property
    def loaded(self):
        if self._loaded is None:
            from ..models import load_model

            self._loaded = load_model(self.config.model, dtype=self.config.dtype, device=self.config.device)
        return self._loaded

    def _hparams(self, method: str):
        from ..editing import resolve_hparams
        from ..editing.keys_model import hparams_key

        return resolve_hparams(method, self.config.hparams or hparams_key(self.config.model),
                               self.config.hparams_overrides())

    def check_inputs(self) -> list[str]:
        """Everything that can be checked before a model is loaded or a directory touched:
        methods and hparams, every record of every dataset, the negation table, the device
        and the model reference. Returns warnings about suspicious data (counts, not rows)."""
        if self._records is not None:
            return self._warnings
        for method in self.config.methods:
            self._hparams(method)
        self._negate_fn()  # a bad table fails here, not after the baseline
        self._records, self._warnings = check_datasets(self.config.datasets, self.config.n)
        if self._loaded is None:
            check_model_and_device(self.config.model, self.config.device)
        return self._warnings

    def preflight(self, resume: bool) -> list[str]:
        """:meth:`check_inputs` and the run directory's rules, still writing nothing."""
        warnings = self.check_inputs()
        self.dir.check(self.config, resume)
        return warnings

    def _negate_fn(self):
        """The default negation, with the config's user table (if any) taking precedence."""
        from ..data.negation import load_negation_table, negate

        if self.config.negation_table is None:
            return None
        table = load_negation_table(self.config.negation_table)
        return lambda template, relation_id: negate(template, relation_id, overrides=table)

    # --- the loop -------------------------------------------------------------------------------
    def run(self, resume: bool = False) -> dict[str, Any]:
        self.preflight(resume)
        loaded = self.loaded  # before the directory is touched: a failed load leaves none
        n_layers = loaded.adapter.n_layers(loaded.model)
        for method in self.config.methods:
            self._hparams(method).check_model(n_layers)
        self.dir.open(self.config, resume)
        try:
            return self._run()
        except BaseException as exc:
            self.dir.abandon()  # no work saved: nothing left behind to block the next run
            if isinstance(exc, UserError) and self.dir.has_work:
                raise RunFailedError(f"{exc} (the work done is kept: editprobe run --out {self.config.out} "
                                "--resume continues it)") from exc
            raise

    def _run(self) -> dict[str, Any]:
        started = time.perf_counter()
        datasets: dict[str, Any] = {}
        results: list[dict[str, Any]] = []
        samples: list[dict[str, Any]] = []
        assert self._records is not None
        for spec in self.config.datasets:
            dk = dataset_key(spec)
            plan = build_negation_plan(self._records[spec], self._negate_fn())
            base = self._baseline(dk, plan)
            datasets[dk] = self._dataset_summary(plan, base)
            samples += base["samples"]
            for method in self.config.methods:
                runs = {kind: self._edit_stage(dk, method, kind, plan) for kind in KINDS}
                result, rows = self._combine(dk, method, plan, base, runs)
                results.append(result)
                samples += rows
        summary = {
            "config": self.config.model_dump(mode="json"),
            "seed": self.config.seed,
            "versions": package_versions(),
            "datasets": datasets,
            "results": results,
            "timings": {"batches": self.dir.progress()["timings"], "total_s": time.perf_counter() - started},
        }
        self.dir.finish(summary, samples)
        return summary

    def _baseline(self, dk: str, plan: NegationPlan) -> dict[str, Any]:
        """The unedited model: negation baseline, fact-check no-edit row and the answers about
        the new-object statements that fact-checking's inclusion rule needs."""
        stage = f"{dk}__baseline"
        done = self.dir.load_stage(stage)
        if done is not None:
            return done
        model, tok = self.loaded.model, self.loaded.tokenizer
        self.console.print(f"[bold]{escape(dk)}[/bold]: no-edit baseline on {plan.n_records} records")
        neg = no_edit_baseline(model, tok, plan)
        fc_cfg = self.config.factcheck
        fc_none = no_edit_fact_check(model, tok, _records_of(plan), fc_cfg)
        before = ask_records(model, tok, _records_of(plan), "new", fc_cfg)
        rows = [_sample(dk, "none", "none", s.model_dump(mode="json")) for s in neg.samples]
        rows += [_fc_sample(dk, "none", "none", "factcheck-no-edit", r) for r in fc_none.replies]
        rows += [_fc_sample(dk, "none", "none", "factcheck-before", r) for r in before]
        result = {
            "negation": {"available": neg.available, "note": neg.note, "PP": neg.PP, "PN": neg.PN,
                         "n_known": neg.pp.n, "known": neg.known.model_dump(), "pn": neg.pn.model_dump()},
            "factcheck": {"Acc": fc_none.accuracy, "n": fc_none.score.n, "counts": fc_none.counts,
                          "chat_template": fc_none.chat_template, "probe": fc_none.score.label},
            "before": _fc_dump(before),
            "samples": rows,
        }
        self.dir.save_stage(stage, result)
        return result

    def _edit_stage(self, dk: str, method: str, kind: str, plan: NegationPlan) -> dict[str, Any]:
        """Edit with all ``kind`` requests in sequential batches (checkpoint after each), then
        score the final model; the model is restored before returning."""
        stage = f"{dk}__{method}__{kind}"
        done = self.dir.load_stage(stage)
        if done is not None:
            return done
        from ..editing import make_editor

        model, tok = self.loaded.model, self.loaded.tokenizer
        editor = make_editor(method, model, tok, self._hparams(method), model_id=self.config.model)
        requests = plan.positive_requests() if kind == "positive" else plan.negative_requests()
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
            self.console.print(escape(f"{dk} {method} {kind}: scoring {plan.n_records} records"))
            run = score_negation_run(model, tok, plan, kind)  # type: ignore[arg-type]
            result: dict[str, Any] = {"run": run.model_dump(mode="json"), "hparams": editor.hp.model_dump(mode="json"),
                                      # None: a kill fell between a checkpoint and its progress entry.
                                      "edit_reports": [reports.get(str(b)) for b in range(total)]}
            if kind == "positive":  # fact-checking is run on the positively edited model (§3)
                records = _records_of(plan)
                fc_cfg = self.config.factcheck
                result["after"] = _fc_dump(ask_records(model, tok, records, "new", fc_cfg))
                result["control"] = _fc_dump(ask_records(model, tok, records, "old", fc_cfg))
        finally:
            editor.restore()
        self.dir.save_stage(stage, result)
        return result

    def _dataset_summary(self, plan: NegationPlan, base: dict[str, Any]) -> dict[str, Any]:
        return {"n_records": plan.n_records, "n_excluded": plan.n_excluded, "negation_rules": plan.rule_counts(),
                "no_edit": base["negation"], "factcheck_no_edit": base["factcheck"]}

    def _combine(self, dk: str, method: str, plan: NegationPlan, base: dict[str, Any],
                 runs: dict[str, dict[str, Any]]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        pos, neg = (NegationRun.model_validate(runs[k]["run"]) for k in KINDS)
        scores = negation_scores(plan, pos, neg)
        fc = fact_check_result(_fc_load(base["before"]), _fc_load(runs["positive"]["after"]), eff=scores.PP,
                               control=_fc_load(runs["positive"]["control"]), config=self.config.factcheck)
        hp = runs["positive"]["hparams"]
        result = {
            "dataset": dk, "method": method, "preserve_previous": hp.get("preserve_previous"),
            "negation": scores.row(),
            "counts": {k: [s.hits, s.n] for k, s in scores.settings.items()},
            "probes": {k: s.label for k, s in scores.settings.items()},
            "decode_disagreements": scores.decode_disagreements,
            "factcheck": {**fc.row(), "n_records": fc.n_records, "before_counts": fc.before_counts,
                          "after_counts": fc.after_counts, "chat_template": fc.chat_template},
            "hparams": hp,
            "edit_reports": {k: runs[k]["edit_reports"] for k in KINDS},
        }
        rows = [_sample(dk, method, run.edited_with, s.model_dump(mode="json")) for run in (pos, neg) for s in run.samples]
        rows += [_fc_sample(dk, method, "positive", "factcheck-after", r) for r in _fc_load(runs["positive"]["after"])]
        rows += [_fc_sample(dk, method, "positive", "factcheck-control", r) for r in _fc_load(runs["positive"]["control"])]
        return result, rows


def _sample(dk: str, method: str, edited_with: str, s: dict[str, Any]) -> dict[str, Any]:
    return {"dataset": dk, "method": method, "edited_with": edited_with, **s}


def _fc_sample(dk: str, method: str, edited_with: str, setting: str, r: FactCheckReply) -> dict[str, Any]:
    """A fact-check reply in the per-sample shape: the 'expected' answer is always true, the
    statement's own truth differs (the control's old object is the unedited fact)."""
    return {"dataset": dk, "method": method, "edited_with": edited_with, "record_id": r.record_id,
            "setting": setting, "probe": setting, "query": r.statement, "expected": "true",
            "generated": r.generated, "answer": r.answer, "match": r.answer == "true"}


def run_experiment(config: RunConfig, resume: bool = False, loaded=None, progress: bool = True) -> dict[str, Any]:
    return Experiment(config, loaded=loaded, progress=progress).run(resume=resume)
