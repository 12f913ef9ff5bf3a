"""Keys (inputs of the MLP output projection at the edited token: the subject's last token,
or the query's last token with ``locate="last-token"``) and the current hidden state at the
critical layer, both averaged/read over the context templates (docs/engine.md, Keys; Spreading over layers)."""

from __future__ import annotations

from contextlib import ExitStack
from dataclasses import dataclass, field, replace

import torch

from ...data.records import EditRequest
from ...models.adapters import ModelAdapter
from ...models.hooks import capture, run_until_stop
from ...models.resume_forward import block_output_arity, resume_from
from .context import ContextTemplates
from ..prompts import batch_rows, chunks, key_rows


@dataclass
class KeyReplay:
    """One batch's successive key passes (one per edit layer, each after the lower layers'
    writes). A write to block b changes nothing below it, so each pass starts at the block
    the previous pass stored the input of, instead of at the embeddings. Valid only while
    every weight change since that pass is at or above the stored block: the engine makes
    one per batch and writes edit layers in ascending order."""

    block: int | None = None  # the block whose input ``inputs`` holds
    inputs: list[torch.Tensor] = field(default_factory=list)  # per chunk of rows
    arity: int | None = None

    def keep(self, block: int) -> None:
        self.block, self.inputs = block, []


@torch.no_grad()
def read_at_subject(
    model,
    tok,
    adapter: ModelAdapter,
    requests: list[EditRequest],
    templates: list[str],
    inputs_of: list[int] = (),
    outputs_of: dict[str, int] | None = None,
    rows_per_pass: int = 128,
    locate: str = "subject",
    replay: KeyReplay | None = None,
) -> tuple[dict[int, torch.Tensor], dict[str, torch.Tensor], list]:
    """One truncated pass per chunk of rows. Returns, per row (request × template) at the
    edited token (``locate``, see ``prompts.edit_index``): the mlp_out input at each layer in
    ``inputs_of`` (``[rows, d_ff]``), and the output of each named module ``{kind: layer}``
    (``[rows, d]``), in fp32. With ``replay``, the pass starts from the stored input of its
    block when there is one, and stores the input of the lowest layer in ``inputs_of``."""
    outputs_of = outputs_of or {}
    paths_in = {adapter.path("mlp_out", l): l for l in inputs_of}
    paths_out = {adapter.path(kind, l): kind for kind, l in outputs_of.items()}
    depth = max([*inputs_of, *outputs_of.values()])
    # Stop right after the deepest module we need: the layers above cannot matter.
    deepest = adapter.path("block", depth)
    rows = key_rows(tok, requests, templates, locate)
    got_in: dict[int, list[torch.Tensor]] = {l: [] for l in inputs_of}
    got_out: dict[str, list[torch.Tensor]] = {k: [] for k in outputs_of}
    device = next(model.parameters()).device
    # Causal attention: nothing after the edited token changes what is read there, so rows
    # end at it; similar lengths share a pass (less padding); results return in row order.
    order = sorted(range(len(rows)), key=lambda i: rows[i].subject_index)
    cut = [replace(rows[i], ids=rows[i].ids[: rows[i].subject_index + 1]) for i in order]
    lowest = min([*inputs_of, *outputs_of.values()])
    start = replay.block if replay is not None and replay.inputs and replay.block <= lowest else None
    keep = min(inputs_of) if replay is not None and inputs_of else None
    stored = []
    for c, chunk in enumerate(chunks(cut, rows_per_pass)):
        rb = batch_rows(tok, chunk, "right")
        b = rb.batch.to(device)
        pos = rb.subject_positions().to(device)
        ar = torch.arange(len(chunk), device=device)
        keep_path = [adapter.path("block", keep)] if keep is not None else []
        with ExitStack() as stack:
            ins = stack.enter_context(capture(model, list(paths_in), what="input"))
            kept = stack.enter_context(capture(model, keep_path, what="input"))
            outs = stack.enter_context(capture(model, list(paths_out), what="output", stop_after=deepest))
            def run():
                run_until_stop(lambda: model(input_ids=b.input_ids, attention_mask=b.attention_mask, use_cache=False))

            if start is not None and start > 0 and replay.arity is not None:
                given = replay.inputs[c]
                stack.enter_context(resume_from(model, adapter, start - 1, replay.arity, lambda _h: given))
                run()
            elif replay is not None and replay.arity is None:  # replay's stand-ins copy it
                replay.arity = block_output_arity(adapter.block(model, 0), run)
            else:
                run()
        if keep is not None:
            stored.append(kept[keep_path[0]])
        for path, l in paths_in.items():
            got_in[l].append(ins[path][ar, pos].float())
        for path, kind in paths_out.items():
            got_out[kind].append(outs[path][ar, pos].float())
    if keep is not None:
        replay.block, replay.inputs = keep, stored
    back = torch.empty(len(rows), dtype=torch.long)
    back[torch.tensor(order, dtype=torch.long)] = torch.arange(len(rows))
    back = back.to(device)
    return (
        {l: torch.cat(v)[back] for l, v in got_in.items()},
        {k: torch.cat(v)[back] for k, v in got_out.items()},
        rows,
    )


def template_mean(per_row: torch.Tensor, rows, n_requests: int, templates: ContextTemplates) -> torch.Tensor:
    """Average per-row vectors into one column per request with the template weights
    (two-level mean over groups, or flat). Returns ``[dim, n_requests]``."""
    weights = torch.tensor(templates.weights(), dtype=per_row.dtype, device=per_row.device)
    out = torch.zeros(n_requests, per_row.shape[1], dtype=per_row.dtype, device=per_row.device)
    req = torch.tensor([r.request for r in rows], device=per_row.device)
    tmpl = torch.tensor([r.template for r in rows], device=per_row.device)
    out.index_add_(0, req, per_row * weights[tmpl, None])
    return out.T


def bare_rows(per_row: torch.Tensor, rows) -> torch.Tensor:
    """The rows of the bare template (template 0), one column per request: ``[dim, n]``."""
    keep = [i for i, r in enumerate(rows) if r.template == 0]
    return per_row[keep].T


def compute_keys(
    model, tok, adapter: ModelAdapter, requests: list[EditRequest], templates: ContextTemplates, layers: list[int],
    hcur_layer: int | None = None, hcur_kind: str = "block", locate: str = "subject", replay: KeyReplay | None = None,
) -> tuple[dict[int, torch.Tensor], torch.Tensor | None]:
    """Template-averaged keys ``K[l]: [d_ff, n]`` for ``layers`` and, optionally, the current
    value at ``hcur_layer`` on the bare prompt ``[d, n]`` — in one pass."""
    outputs = {hcur_kind: hcur_layer} if hcur_layer is not None else {}
    ins, outs, rows = read_at_subject(model, tok, adapter, requests, templates.all, layers, outputs, locate=locate,
                                      replay=replay)
    keys = {l: template_mean(ins[l], rows, len(requests), templates) for l in layers}
    h_cur = bare_rows(outs[hcur_kind], rows) if hcur_layer is not None else None
    return keys, h_cur
