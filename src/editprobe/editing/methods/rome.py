"""ROME (lte-methods.md §2): one layer, one request at a time, a rank-one update
Δ = (v* − m)(C⁻¹k̄)ᵀ / (kᵀ C⁻¹ k̄).

The free vector is added to the MLP output (norms for clamp and weight decay are the MLP
output's); keys are a flat mean over 21 templates. ``consistent_key`` (R-ROME) uses the
template-averaged key and value in the denominator and residual too, instead of the
bare prompt's — the official code mixes the two, which is known to collapse models.
"""

from __future__ import annotations

import time

import torch

from ...data.records import EditRequest
from ..engine import EditReport, LayerReport, LTEEditor, RequestReport, SolveError
from ..hparams import LTEHParams
from ..keys import bare_rows, read_at_subject, template_mean
from ..solvers import NumericalError, rome_delta
from ..plugins import register_method


class ROMEHParams(LTEHParams):
    method: str = "rome"
    template_groups: list[tuple[int, int]] = [(5, 10), (10, 10)]
    template_flat: bool = True
    mom2_adjustment: bool = True
    consistent_key: bool = False
    preserve_previous: bool = False


@register_method
class ROMEEditor(LTEEditor):
    name = "rome"
    hparams_cls = ROMEHParams
    site_kind = "mlp"
    uses_preserved_keys = False  # a rank-one update per request: no solve keeps earlier keys

    @property
    def needs_covariance(self) -> bool:  # type: ignore[override]
        return self.hp.mom2_adjustment

    def _apply(self, requests: list[EditRequest]) -> EditReport:
        if len(self.layers) != 1:
            raise SolveError(f"rome edits exactly one layer, got {self.layers}")
        layer = self.layers[0]
        timings = {"targets_s": 0.0, "insert_s": 0.0}
        self.templates()
        self.prepare()
        req_reports, layer_reports = [], []
        for req in requests:  # sequential by design: each edit sees the previous ones
            t = time.perf_counter()
            target = self.compute_targets([req])
            timings["targets_s"] += time.perf_counter() - t
            t = time.perf_counter()
            templates = self.templates()
            ins, outs, rows = read_at_subject(self.model, self.tok, self.adapter, [req], templates.all,
                                              [layer], {"mlp_out": layer})
            k_mean = template_mean(ins[layer], rows, 1, templates)[:, 0]
            if self.hp.consistent_key:
                k_plain, m_plain = k_mean, template_mean(outs["mlp_out"], rows, 1, templates)[:, 0]
            else:
                k_plain, m_plain = bare_rows(ins[layer], rows)[:, 0], bare_rows(outs["mlp_out"], rows)[:, 0]
            C = self.covariance(layer).to(k_mean.device) if self.hp.mom2_adjustment else None
            try:
                delta = rome_delta(k_mean, k_plain, target.z["mlp"][0], m_plain, C=C, layer=layer)
            except NumericalError as exc:
                raise SolveError(f"rome: the update for layer {layer} (request {req.id}) failed: {exc}") from exc
            if not torch.isfinite(delta).all():
                raise SolveError(f"rome: the update for layer {layer} (request {req.id}) has NaN/inf")
            self.write(layer, delta)
            timings["insert_s"] += time.perf_counter() - t
            req_reports.append(RequestReport(id=req.id, loss=target.loss[0], target_prob=target.target_prob[0],
                                             steps=target.steps[0]))
            layer_reports.append(LayerReport(layer=layer, residual_norm=float((target.z["mlp"][0] - m_plain).norm()),
                                             update_norm=float(delta.norm())))
        return EditReport(method=self.name, batch=self._batches, n_requests=len(requests), requests=req_reports,
                          layers=layer_reports, timings=timings)
