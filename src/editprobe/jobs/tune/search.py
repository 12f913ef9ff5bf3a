"""The ``tune`` job: search a locate-then-edit method's settings with Optuna on a dev split.

A trial edits the dev records sequentially (batches of ``batch_size``, as ``run`` does)
with one candidate setting, and is scored by the harmonic mean of efficacy (PP exact match)
and neighbourhood specificity on the records edited so far; Optuna's PercentilePruner stops
a trial after any batch that scores in the bottom quarter of the finished trials at that
batch (PRUNER below). PN is measured at every report and, for every trial that finishes, a
second run with the negated requests gives NN, NP and the Avg discrepancy: recorded, never
optimized, so a setting that buys efficacy with meaning shows it. The shipped setting is
the first trial, so the best trial is never worse on the dev records than what ships. C0 of
every candidate layer is computed once, before the first trial. The output (output.py)
is an hparams YAML that ``edit --hparams`` reads, with its evidence as comments; the config,
the dev split and the search space are in space.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from ...errors import EditFailedError, OutputError
from .space import DEFAULT_EVAL, DevSplit, SearchSpace, TuneConfig, choose_dev_split, parse_range

__all__ = ["DEFAULT_EVAL", "TrialRecord", "TuneConfig", "TuneInterrupted", "TuneResult", "Tuner", "choose_dev_split",
           "objective_score", "parse_range", "select_best"]


# Optuna compares a running trial only with *finished* ones. Against the median of the first
# two finished trials (MedianPruner, until 2026-11-28) a zsRE search pruned a trial at 80%
# efficacy after its first batch of 10: with few finished trials and 10-record batches the
# median is close to the best so far. The bottom quarter prunes only what is clearly worse.
PRUNE_PERCENTILE = 25.0
PRUNE_STARTUP = 3  # finished trials before any pruning
PRUNER = f"PercentilePruner ({PRUNE_PERCENTILE:g}th percentile of finished trials, from {PRUNE_STARTUP} on)"


# --- one trial's record -----------------------------------------------------------------------
class TrialRecord(BaseModel):
    number: int
    state: str  # complete | pruned | failed
    fields: dict[str, Any]  # the hparams fields the trial set
    batches: int = 0  # dev batches edited
    efficacy: float | None = None  # PP exact match, % of the records edited
    specificity: float | None = None  # neighbourhood specificity, %
    score: float | None = None  # the objective
    PN: float | None = None
    NN: float | None = None
    NP: float | None = None
    avg: float | None = None  # Avg discrepancy (needs the negative run)
    seconds: float = 0.0
    note: str | None = None


def objective_score(efficacy: float, specificity: float | None) -> float:
    """Harmonic mean of efficacy and specificity (as ROME/MEMIT's Score combines its metrics):
    a setting cannot buy one with the other. Efficacy alone when no record has a
    neighbourhood prompt."""
    if specificity is None:
        return efficacy
    if efficacy <= 0 or specificity <= 0:
        return 0.0
    return 2 * efficacy * specificity / (efficacy + specificity)


def select_best(trials: list[TrialRecord]) -> TrialRecord | None:
    """The finished trial with the highest score; among equal scores the earlier one, so the
    base setting (trial 0) stays unless a setting beats it. (Breaking ties by the Avg
    discrepancy instead was tried on zsRE and did worse on held-out records: docs/tune.md.)"""
    finished = [r for r in trials if r.state == "complete" and r.score is not None]
    if not finished:
        return None
    return max(finished, key=lambda r: (round(r.score, 6), -r.number))


class TuneResult(BaseModel):
    trials: list[TrialRecord]
    best: int  # trial number
    baseline: int | None  # the trial number of the base setting, when tried
    baseline_note: str | None
    wall_s: float
    c0_s: float
    candidate_layers: list[int]
    space: SearchSpace
    interrupted: bool = False  # Ctrl-C ended the search: the best of the trials that finished
    seeded: dict[str, int] = {}  # the settings seeds --seed derived (template_seed), as every trial used them


class TuneInterrupted(KeyboardInterrupt):
    """Ctrl-C during the search. ``result``: the trials that finished before it and the best
    of them (None when none finished); the trial it interrupted is not among them."""

    def __init__(self, result: TuneResult | None) -> None:
        super().__init__()
        self.result = result


class _InterruptedTrial(BaseException):
    """Ctrl-C inside a trial, carried past Optuna: it records a KeyboardInterrupt from the
    objective as a failed trial and logs it with a 50-line traceback."""


TUNED_HEADER = "# Tuned by `editprobe tune`"


def check_tuned_output(out: Path, overwrite: bool) -> None:
    """``--out`` is a new file, or (``--overwrite``) a YAML an earlier ``tune`` wrote; never a
    directory or a file of someone else's."""
    from ...paths import check_writable

    if out.is_dir():
        raise OutputError(f"--out {out}: is a directory, not a YAML file")
    if out.exists():
        if not overwrite:
            raise OutputError(f"--out {out}: exists; pass --overwrite to replace it, or choose another --out")
        try:
            with out.open(encoding="utf-8", errors="replace") as f:
                first = f.readline()
        except OSError as exc:
            raise OutputError(f"--out {out}: cannot read it: {exc.strerror or type(exc).__name__}") from None
        if not first.startswith(TUNED_HEADER):
            raise OutputError(f"--out {out}: is not a file `editprobe tune` wrote (its first line is not "
                              f"{TUNED_HEADER!r}); --overwrite replaces only those: choose another --out")
    check_writable(out.parent)


def tune_lock(out: Path):
    """The lock of a tune writing ``out``: a hidden file beside it, there only while it runs."""
    from ...locks import FileLock

    return FileLock(out.parent / f".{out.name}.lock", f"--out {out}", remove=True)


class Tuner:
    """``Tuner(config).preflight()`` (no model loaded, nothing written), then ``.run()``
    (a :class:`~editprobe.runs.plan.Job`)."""

    def __init__(self, config: TuneConfig, loaded=None) -> None:
        self.config = config
        self._loaded = loaded
        self.dev: DevSplit | None = None
        self.choice = None
        self.base = None

    def preflight(self) -> list[str]:
        from ...data.checks import suspicious_records
        from ...data.negation import negate
        from ...runs.lengths import PromptLengths
        from ...runs.plan import MethodPlan
        from ...runs.preflight import check_model_and_device

        cfg = self.config
        # The base setting, chosen with no dataset kind: a tuned file only when --hparams names it.
        # Its context templates follow --seed, as a run's; the file written records the seed used.
        method = MethodPlan.build(cfg.method, cfg, cfg.overrides).with_run_seed(cfg.seed)
        self.choice, self.base = method.choice, method.hparams
        check_tuned_output(Path(cfg.out).expanduser(), cfg.overwrite)
        self.dev = choose_dev_split(cfg)
        dev_records = [item.record for item in self.dev.plan.items]
        # A trial edits the dev records, asks their negated prompts and their neighbours.
        lengths = PromptLengths(cfg.model, cfg.max_prompt_tokens, loaded=self._loaded,
                                negated=lambda template, rid: negate(template, rid).negated, can_skip=False)
        warnings = lengths.setup() + ([self.dev.unread_fields] if self.dev.unread_fields else [])
        lengths.check(dev_records, self.dev.path)
        if self._loaded is None:
            check_model_and_device(cfg.model, cfg.device)
        return warnings + suspicious_records(dev_records, cfg.data)

    def run(self, on_trial: Callable[[TrialRecord, int], None] | None = None,
            on_stage: Callable[[str], None] | None = None) -> TuneResult:
        """Search; ``on_trial(record, best_number)`` after each trial, ``on_stage(text)`` before
        the long steps. Returns every trial and the best one (the YAML is written by the caller)."""
        import optuna

        from ...editing import make_editor, resolve_hparams
        from ...models import load_model
        from ...probes.classic import neighborhood_reference

        if self.dev is None:
            self.preflight()
        cfg, dev = self.config, self.dev
        say = on_stage or (lambda text: None)
        started = time.perf_counter()
        loaded = self._loaded or load_model(cfg.model, dtype=cfg.dtype, device=cfg.device)
        model, tok = loaded.model, loaded.tokenizer
        space = SearchSpace.build(cfg, self.base, loaded.adapter.n_layers(model))

        # C0 of every candidate layer in one pass over the corpus, before any trial; trials
        # read it from the statistics cache (and AlphaEdit's projectors likewise).
        say(f"C0 statistics for layers {space.layers[0]}..{space.layers[1]}")
        t = time.perf_counter()
        probe = make_editor(cfg.method, model, tok, resolve_hparams(cfg.method, self.base,
                                                                   {"layers": space.candidate_layers}),
                            model_id=cfg.model)
        probe.prepare()
        stats, c0_s = probe.stats_store(), time.perf_counter() - t
        say("unedited model's neighbourhood continuations")
        reference = neighborhood_reference(model, tok, [item.record for item in dev.plan.items])

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sampler = optuna.samplers.TPESampler(seed=cfg.seed, n_startup_trials=min(5, max(1, cfg.trials // 3)))
        pruner = optuna.pruners.PercentilePruner(PRUNE_PERCENTILE, n_startup_trials=PRUNE_STARTUP, n_warmup_steps=0)
        study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
        baseline_params, baseline_note = space.baseline(self.base)
        if baseline_params is not None:
            study.enqueue_trial(baseline_params)
        records: list[TrialRecord] = []
        trial_runner = _TrialRunner(cfg, self.base, space, dev.plan, reference, model, tok, stats)

        def objective(trial) -> float:
            try:
                record = trial_runner(trial)
            except KeyboardInterrupt:
                raise _InterruptedTrial from None
            records.append(record)
            if record.state == "pruned":
                raise optuna.TrialPruned()
            return record.score if record.score is not None else 0.0

        def after(study, frozen) -> None:
            best = select_best(records)
            if on_trial is not None:
                on_trial(records[-1], best.number if best is not None else -1)

        def result(interrupted: bool = False) -> TuneResult | None:
            best = select_best(records)
            if best is None:
                return None
            return TuneResult(trials=list(records), best=best.number,
                              baseline=0 if baseline_params is not None else None, baseline_note=baseline_note,
                              wall_s=time.perf_counter() - started, c0_s=c0_s,
                              candidate_layers=space.candidate_layers, space=space, interrupted=interrupted,
                              seeded=self._seeded())

        timeout = cfg.timeout_min * 60 if cfg.timeout_min is not None else None
        try:
            study.optimize(objective, n_trials=cfg.trials, timeout=timeout, callbacks=[after])
        except (KeyboardInterrupt, _InterruptedTrial):
            raise TuneInterrupted(result(interrupted=True)) from None
        found = result()
        if found is None:
            raise EditFailedError("tune: no trial finished (every one failed or was pruned); widen the ranges or "
                                  "raise --trials")
        return found


    def _seeded(self) -> dict[str, int]:
        """The base's seed fields that --seed changed (none at seed 0)."""
        from ...editing.registry import method_class

        fields = [f for f in method_class(self.config.method).seed_fields if f in type(self.base).model_fields]
        return {f: getattr(self.base, f) for f in fields} if self.config.seed else {}


class _Pruned(Exception):
    """A trial the pruner stopped after a batch (raised out of the batch loop)."""


class _TrialRunner:
    """Edits the dev records with one trial's setting and measures it (the model is restored
    after each run)."""

    def __init__(self, cfg: TuneConfig, base, space: SearchSpace, plan, reference, model, tok, stats) -> None:
        self.cfg, self.base, self.space, self.plan = cfg, base, space, plan
        self.reference, self.model, self.tok, self.stats = reference, model, tok, stats

    def _measure(self, n_done: int) -> tuple[float, float | None, float]:
        """Efficacy, neighbourhood specificity and PN (%) on the first ``n_done`` records."""
        from ...probes.classic import NeighborhoodReference, neighborhood_specificity
        from ...probes.exact import exact_match_batch

        items = self.plan.items[:n_done]
        ids = {item.record.id for item in items}
        pp = exact_match_batch(self.model, self.tok, [(item.query("positive"), item.record.target_new) for item in items])
        pn = exact_match_batch(self.model, self.tok, [(item.query("negated"), item.record.target_new) for item in items])
        ref = NeighborhoodReference(n_records=len(items),
                                    prompts=tuple(p for p in self.reference.prompts if p.record_id in ids))
        spec = neighborhood_specificity(self.model, self.tok, ref).exact if ref.prompts else None
        return 100 * sum(pp) / len(pp), spec, 100 * sum(pn) / len(pn)

    def _editor(self, fields: dict[str, Any]):
        from ...editing import make_editor, resolve_hparams

        hp = resolve_hparams(self.cfg.method, self.base, fields)
        return make_editor(self.cfg.method, self.model, self.tok, hp, model_id=self.cfg.model, stats=self.stats)

    def __call__(self, trial) -> TrialRecord:
        from ...probes.negation import score_negation_run
        from ...runs.sequential import edit_sequentially, n_batches

        started = time.perf_counter()
        fields = self.space.suggest(trial)
        record = TrialRecord(number=trial.number, state="complete", fields=fields)
        requests = self.plan.positive_requests()
        bs, total = self.cfg.batch_size, n_batches(len(requests), self.cfg.batch_size)

        def after_batch(b: int, report, seconds: float) -> None:
            eff, spec, pn = self._measure(min((b + 1) * bs, len(requests)))
            record.batches, record.efficacy, record.specificity, record.PN = b + 1, eff, spec, pn
            record.score = objective_score(eff, spec)
            trial.report(record.score, b)
            if b + 1 < total and trial.should_prune():
                raise _Pruned

        editor = self._editor(fields)
        positive = None
        try:
            edit_sequentially(editor, requests, bs, seed=self.cfg.seed, stage="tune__positive", on_batch=after_batch)
            if editor.finalize():  # e.g. PRUNE's restraint after the last batch: measure what it left
                record.efficacy, record.specificity, record.PN = self._measure(len(requests))
                record.score = objective_score(record.efficacy, record.specificity)
            positive = score_negation_run(self.model, self.tok, self.plan, "positive", decode_extra=None)
        except _Pruned:
            record.state = "pruned"
        except EditFailedError as exc:
            record.state, record.score, record.note = "failed", 0.0, str(exc)
        finally:
            editor.restore()
        if record.state == "complete" and self.cfg.negative:
            self._negative(fields, record, positive)
        record.seconds = time.perf_counter() - started
        return record

    def _negative(self, fields: dict[str, Any], record: TrialRecord, positive) -> None:
        """NN and NP from a run with the negated requests; Avg from all four settings."""
        from ...probes.negation import negation_scores, score_negation_run
        from ...runs.sequential import edit_sequentially

        editor = self._editor(fields)
        try:
            edit_sequentially(editor, self.plan.negative_requests(), self.cfg.batch_size, seed=self.cfg.seed,
                              stage="tune__negative")
            editor.finalize()
            negative = score_negation_run(self.model, self.tok, self.plan, "negative", decode_extra=None)
        except EditFailedError as exc:
            record.note = f"negative run failed: {exc}"
            return
        finally:
            editor.restore()
        scores = negation_scores(self.plan, positive, negative)
        record.NN, record.NP, record.avg = scores.NN, scores.NP, scores.avg
