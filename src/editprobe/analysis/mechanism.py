"""Mechanism analysis (docs/protocol.md#mechanism-analysis; the paper's appendix A.8, Figures 6–7): does the editor's
optimized target for ``"X is o*"`` differ from its target for ``"X is not o*"``?

For a record (p, s, o*) at the analysis layer L (the editor's critical layer):

- m⁰: the output of the MLP output projection at L at the subject's last token, on the
  unedited model, i.e. W k (plus the projection's bias where the architecture has one; it
  cancels in every difference below). Computed for p and for neg(p): they agree when the
  negation word follows the subject (causal LM) and are counted when they do not.
- ``m¹ = m⁰(p) + δ(p, s, o*)`` and ``m² = m⁰(neg p) + δ(neg p, s, o*)``, where δ = z − anchor is the
  free vector the target optimization found. Why this is "the target at the MLP output":
  at a 'block' site (MEMIT family) δ is added to the residual after block L, which is the
  same as adding it to the MLP output at L, and it is exactly what the insertion asks
  W k to gain at the critical layer; at an 'mlp' site (ROME) δ is added to the MLP output
  itself. PMET/AdaEdit optimize two sites (attention output and MLP output): only the MLP
  one is written into W, so that one is used. NAMET (official padding) averages per-prompt
  residuals at insertion; δ, the vector it optimized, is used here.
- per record: ratio = ‖m¹−m²‖/‖m¹−m⁰‖ and cos(m¹−m⁰, m²−m⁰), with m⁰ = m⁰(p). A target
  that ignores "not" gives ratio ≪ 1 and cosine ≈ 1.

Records are used only when the unedited model's greedy answers to p and neg(p) differ
(the model reads the negation), in dataset order, the first ``n`` that qualify.
Nothing here edits the model: :func:`weights_unchanged` checks it (and restores W).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ..data.records import EditRecord, EditRequest
from ..editing.lte.engine import LTEEditor
from ..editing.settings.hparams import LTEHParams
from ..editing.lte.keys import read_at_subject
from ..probes.generation import decode_text, greedy_decode, query_ids
from ..data.negation_plan import NegateFn, build_negation_plan
from ..errors import UserError

SITE_PREFERENCE = ("mlp", "block")  # the MLP-output site when a method has one, else the block's
ANSWER_TOKENS = 4  # [choice] enough for the first word of most answers
NEG_SUFFIX = "::neg"  # request ids of neg(p), so a batch never holds one id twice


class AnalysisError(UserError, ValueError):
    """Bad input for the analysis (n < 1, no qualifying record, unknown site)."""


@dataclass(frozen=True)
class Candidate:
    """A record whose unedited answers to p and neg(p) differ."""

    record: EditRecord
    negated_template: str
    answer_p: str
    answer_negp: str

    @property
    def query(self) -> str:
        return self.record.query

    @property
    def negated_query(self) -> str:
        return self.negated_template.format(self.record.subject)

    def request(self, negated: bool) -> EditRequest:
        req = self.record.request(template=self.negated_template if negated else self.record.template)
        return req.model_copy(update={"id": req.id + NEG_SUFFIX}) if negated else req


@dataclass(frozen=True)
class Selection:
    items: tuple[Candidate, ...]
    n_scanned: int  # records read, in order, until n qualified (unnegatable ones included)
    n_unnegatable: int


def answer_key(text: str) -> str:
    """What two answers are compared on: the first word, case-folded. [choice] A longer
    span would count "French, and" vs "French. He" as different answers."""
    m = re.search(r"\w+", text)
    return m.group(0).casefold() if m else ""


def greedy_answers(model, tok, queries: Sequence[str], max_new_tokens: int = ANSWER_TOKENS,
                   batch_size: int = 16) -> list[str]:
    if not queries:
        return []
    ids = greedy_decode(model, tok, [query_ids(tok, q) for q in queries], max_new_tokens, batch_size=batch_size)
    return [decode_text(tok, x).strip() for x in ids]


def select_records(model, tok, records: Sequence[EditRecord], n: int, negate_fn: NegateFn | None = None,
                   answer_tokens: int = ANSWER_TOKENS, chunk: int = 64) -> Selection:
    """The first ``n`` records (dataset order) whose unedited greedy answers to p and
    neg(p) differ by :func:`answer_key`. Decodes ``chunk`` records at a time and stops as
    soon as ``n`` qualified."""
    if n < 1:
        raise AnalysisError(f"n must be at least 1, not {n}")
    chosen: list[Candidate] = []
    scanned = unnegatable = 0
    for start in range(0, len(records), chunk):
        part = list(records[start : start + chunk])
        # a record's own negated prompt without its subject cannot be a negated edit here
        kept = {it.record.id: it for it in build_negation_plan(part, negate_fn).items if it.editable}
        usable = [kept[r.id] for r in part if r.id in kept]
        answers = greedy_answers(model, tok, [it.query(k) for it in usable for k in ("positive", "negated")],
                                 answer_tokens)
        by_id = {it.record.id: (answers[2 * i], answers[2 * i + 1]) for i, it in enumerate(usable)}
        for record in part:
            scanned += 1
            if record.id not in kept:
                unnegatable += 1
                continue
            a_p, a_n = by_id[record.id]
            if answer_key(a_p) != answer_key(a_n):
                chosen.append(Candidate(record, kept[record.id].negated_template, a_p, a_n))
                if len(chosen) == n:
                    return Selection(tuple(chosen), scanned, unnegatable)
    return Selection(tuple(chosen), scanned, unnegatable)


def hparams_for_layer(hp: LTEHParams, layer: int) -> LTEHParams:
    """Hyperparameters whose target is optimized at ``layer``. The target depends only on
    the critical (last) edit layer, so another layer becomes a one-layer edit at ``layer``;
    a per-layer λ list is cut to that layer's value so the validators still hold."""
    if layer == hp.layers[-1]:
        return hp
    w = hp.mom2_update_weight
    lam = hp.lam(layer) if layer in hp.layers else (w[-1] if isinstance(w, list) else w)
    return type(hp).model_validate({**hp.model_dump(), "layers": [layer], "mom2_update_weight": lam})


def target_site(editor: LTEEditor) -> str:
    kinds = [s.kind for s in editor.target_settings().sites]
    for kind in SITE_PREFERENCE:
        if kind in kinds:
            return kind
    raise AnalysisError(f"{editor.name}: no MLP-output or block target site (sites: {', '.join(kinds)})")


def mlp_outputs(editor: LTEEditor, requests: Sequence[EditRequest], layer: int) -> torch.Tensor:
    """m⁰ per request ``[n, d]`` (fp32): the MLP output projection's output at ``layer`` at
    the subject's last token of the bare query (no context template)."""
    _, outs, _ = read_at_subject(editor.model, editor.tok, editor.adapter, list(requests), ["{}"], [],
                                 {"mlp_out": layer}, rows_per_pass=editor.hp.rows_per_pass)
    return outs["mlp_out"].cpu()


def target_deltas(editor: LTEEditor, requests: Sequence[EditRequest], site: str, batch_size: int = 16,
                  on_progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, list[float]]:
    """δ = z − anchor at ``site`` per request ``[n, d]`` and the target probabilities.
    Batching does not change a target: each request has its own vector, Adam and stop."""
    deltas: list[torch.Tensor] = []
    probs: list[float] = []
    for start in range(0, len(requests), batch_size):
        res = editor.compute_targets(list(requests[start : start + batch_size]))
        deltas.append((res.z[site] - res.anchor[site]).float().cpu())
        probs += list(res.target_prob)
        if on_progress is not None:
            on_progress(min(start + batch_size, len(requests)), len(requests))
    return torch.cat(deltas), probs


def ratio_and_cos(m0: torch.Tensor, m1: torch.Tensor, m2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row: ‖m¹−m²‖/‖m¹−m⁰‖ and cos(m¹−m⁰, m²−m⁰); NaN where a norm is zero (no
    optimization step was needed), never a silent 0 or inf."""
    d1, d2 = (m1 - m0).double(), (m2 - m0).double()
    n1, n2 = d1.norm(dim=-1), d2.norm(dim=-1)
    nan = torch.full_like(n1, float("nan"))
    ratio = torch.where(n1 > 0, (m1 - m2).double().norm(dim=-1) / n1, nan)
    cos = torch.where((n1 > 0) & (n2 > 0), (d1 * d2).sum(-1) / (n1 * n2), nan)
    return ratio, cos


def _stats(x: torch.Tensor) -> tuple[float, float, float]:
    """Mean, median, population std (ddof=0) over the finite values; NaN when none."""
    v = x[torch.isfinite(x)].double()
    if v.numel() == 0:
        return math.nan, math.nan, math.nan
    # quantile: the usual median (mean of the middle two for an even count), not torch's lower one
    return float(v.mean()), float(torch.quantile(v, 0.5)), float(v.std(unbiased=False))


def json_float(x: float) -> float | None:
    """JSON has no NaN: a missing value is null."""
    return None if not math.isfinite(x) else float(x)


@contextmanager
def weights_unchanged(model, adapter, layers: Sequence[int]) -> Iterator[None]:
    """Fail loudly if anything wrote to a parameter inside the block (every in-place write
    bumps a tensor's version counter); the MLP output projections of ``layers`` (what an
    editor writes) are restored first regardless."""
    params = dict(model.named_parameters())
    versions = {k: p._version for k, p in params.items()}
    saved = {layer: adapter.edit_weight(model, layer).detach().clone() for layer in layers}
    ok = False
    try:
        yield
        ok = True
    finally:
        changed = [k for k, p in params.items() if p._version != versions[k]]
        with torch.no_grad():
            for layer, w in saved.items():
                current = adapter.edit_weight(model, layer)
                if not torch.equal(current, w):
                    current.copy_(w)
        if ok and changed:
            raise RuntimeError(f"the analysis wrote to model weights ({', '.join(changed[:5])}); "
                               "the MLP output projections were restored")


@dataclass
class MechanismResult:
    method: str
    layer: int
    site: str
    selection: Selection
    m0: torch.Tensor  # [n, d] m⁰ of p
    m0_negp: torch.Tensor  # [n, d] m⁰ of neg(p)
    m1: torch.Tensor
    m2: torch.Tensor
    prob_p: list[float]  # target probability the optimization reached, p / neg(p)
    prob_negp: list[float]
    m0_tolerance: float
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def items(self) -> tuple[Candidate, ...]:
        return self.selection.items

    def per_record(self) -> dict[str, torch.Tensor]:
        ratio, cos = ratio_and_cos(self.m0, self.m1, self.m2)
        rel = (self.m0 - self.m0_negp).double().norm(dim=-1) / self.m0.double().norm(dim=-1).clamp(min=1e-30)
        return {"ratio": ratio, "cos": cos, "norm1": (self.m1 - self.m0).double().norm(dim=-1),
                "norm2": (self.m2 - self.m0).double().norm(dim=-1), "m0_differs": rel > self.m0_tolerance}

    def summary(self) -> dict[str, float | int | None]:
        pr = self.per_record()
        r, c = _stats(pr["ratio"]), _stats(pr["cos"])
        return {
            "ratio_mean": json_float(r[0]), "ratio_median": json_float(r[1]), "ratio_std": json_float(r[2]),
            "cos_mean": json_float(c[0]), "cos_median": json_float(c[1]), "cos_std": json_float(c[2]),
            "norm_m1_m0_mean": json_float(_stats(pr["norm1"])[0]),
            "norm_m2_m0_mean": json_float(_stats(pr["norm2"])[0]),
            "m0_differs_between_p_and_negp": int(pr["m0_differs"].sum()),
        }

    def records(self) -> list[dict]:
        pr = self.per_record()
        out = []
        for i, c in enumerate(self.items):
            out.append({
                "record_id": c.record.id, "query": c.query, "negated_query": c.negated_query,
                "subject": c.record.subject, "target_new": c.record.target_new,
                "answer_p": c.answer_p, "answer_negp": c.answer_negp,
                "ratio": json_float(float(pr["ratio"][i])), "cos": json_float(float(pr["cos"][i])),
                "norm_m1_m0": float(pr["norm1"][i]), "norm_m2_m0": float(pr["norm2"][i]),
                "m0_differs": bool(pr["m0_differs"][i]),
                "target_prob_p": self.prob_p[i], "target_prob_negp": self.prob_negp[i],
            })
        return out


def m0_tolerance(model) -> float:
    """Relative difference above which m⁰(p) and m⁰(neg p) count as different: the same
    prefix computed in rows of different length may differ by rounding, more in 16-bit."""
    return max(1e-4, 8 * torch.finfo(next(model.parameters()).dtype).eps)


def analyze_mechanism(editor: LTEEditor, records: Sequence[EditRecord], n: int = 35,
                      negate_fn: NegateFn | None = None, answer_tokens: int = ANSWER_TOKENS, batch_size: int = 16,
                      on_progress: Callable[[int, int], None] | None = None) -> MechanismResult:
    """m⁰, m¹, m² for the first ``n`` qualifying records at ``editor.critical_layer`` (build
    the editor with :func:`hparams_for_layer` to analyse another layer). The model is
    expected unedited and is left as it was."""
    if batch_size < 1:
        raise AnalysisError(f"batch size must be at least 1, not {batch_size}")
    model, layer = editor.model, editor.critical_layer
    site = target_site(editor)
    timings: dict[str, float] = {}
    with weights_unchanged(model, editor.adapter, sorted({*editor.layers, layer})):
        t = time.perf_counter()
        sel = select_records(model, editor.tok, records, n, negate_fn, answer_tokens)
        timings["select_s"] = time.perf_counter() - t
        if not sel.items:
            raise AnalysisError(
                f"no record qualifies among the {sel.n_scanned} scanned: {sel.n_unnegatable} could not be negated, "
                f"and the unedited answers to p and neg(p) agree for the other {sel.n_scanned - sel.n_unnegatable}")
        requests = [c.request(False) for c in sel.items] + [c.request(True) for c in sel.items]
        t = time.perf_counter()
        m0_all = mlp_outputs(editor, requests, layer)
        timings["m0_s"] = time.perf_counter() - t
        t = time.perf_counter()
        delta, probs = target_deltas(editor, requests, site, batch_size, on_progress)
        timings["targets_s"] = time.perf_counter() - t
    k = len(sel.items)
    m0, m0n = m0_all[:k], m0_all[k:]
    return MechanismResult(
        method=editor.name, layer=layer, site=site, selection=sel, m0=m0, m0_negp=m0n,
        m1=m0 + delta[:k], m2=m0n + delta[k:], prob_p=probs[:k], prob_negp=probs[k:],
        m0_tolerance=m0_tolerance(model), timings=timings,
    )


def write_analysis(result: MechanismResult, out: str | Path, *, model: str, data: str, n_requested: int,
                   seed: int = 0, extra_metadata: dict[str, str] | None = None) -> dict[str, Path]:
    """analysis.json, vectors.safetensors and the two figures in ``out`` (atomic writes)."""
    import json

    from safetensors.torch import save_file

    from ..paths import atomic_path, write_json_atomic
    from .mechanism_figures import FIGURE_NAMES, save_figures

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    figures = save_figures(result.m0, result.m1, result.m2, out, seed=seed,
                           title=f"{result.method}, layer {result.layer}")
    tensors = {"m0": result.m0, "m1": result.m1, "m2": result.m2, "m0_negp": result.m0_negp}
    metadata = {"method": result.method, "layer": str(result.layer), "site": result.site, "seed": str(seed),
                "record_ids": json.dumps([c.record.id for c in result.items]),
                "timings": json.dumps(result.timings), **(extra_metadata or {})}
    with atomic_path(out / "vectors.safetensors") as tmp:
        save_file({k: v.float().contiguous() for k, v in tensors.items()}, str(tmp), metadata=metadata)
    write_json_atomic(out / "analysis.json", {
        "model": model, "method": result.method, "data": data, "layer": result.layer,
        "n_requested": n_requested, "n_selected": len(result.items), "n_scanned": result.selection.n_scanned,
        "summary": result.summary(), "figures": dict(FIGURE_NAMES), "records": result.records(),
    })
    return {"analysis": out / "analysis.json", "vectors": out / "vectors.safetensors", **figures}
