"""Shared pieces of the engine tests (test_engine_*.py): the trained tiny models (from
tiny_trained.py, trained once per session), random edit requests and the exact-match check.
No tests live here.

``fresh(model_type)`` puts the trained weights back before handing a model out, so a test
may edit it freely.
"""

from __future__ import annotations

import functools
import random

import torch

from editprobe.data.records import EditRequest
from editprobe.editing.lte.covariance import CovarianceStore
from editprobe.models.tiny import tiny_corpus, tiny_facts
from editprobe.models.tokens import continuation_ids, encode
from tiny_trained import fresh, pristine, twin  # noqa: F401  (the engine tests import them from here)


@functools.lru_cache(maxsize=None)
def corpus():
    return tiny_corpus()


def store(tmp_path_factory) -> CovarianceStore:
    # One folder for the whole session: C0 of a model is computed once, by whichever test
    # asks first (the store keys it by the model's weights).
    return CovarianceStore(root=tmp_path_factory.getbasetemp() / "engine-stats", progress=False)


def objects_by_template() -> dict[str, list[str]]:
    out: dict[str, set[str]] = {}
    for template, _, obj in tiny_facts():
        out.setdefault(template, set()).add(obj)
    return {t: sorted(o) for t, o in out.items()}


def true_object(template: str, subject: str) -> str:
    return next(o for t, s, o in tiny_facts() if t == template and s == subject)


def new_target(rng: random.Random, template: str, subject: str, tok=None) -> str:
    """A different object among those the template has in the training facts (objects the
    model never saw are unreachable for a tiny model). With ``tok``: only objects that
    are one token after the query."""
    choices = [o for o in objects_by_template()[template] if o != true_object(template, subject)]
    if tok is not None:
        query = template.format(subject)
        choices = [o for o in choices if len(continuation_ids(tok, query, o)) == 1]
    return rng.choice(choices)


def random_edits(n: int, seed: int = 0, prefix: str = "r", tok=None, facts=None) -> list[EditRequest]:
    rng = random.Random(seed)
    chosen = rng.sample(facts if facts is not None else tiny_facts(), n)
    return [EditRequest(id=f"{prefix}{i}", subject=s, template=t, target=new_target(rng, t, s, tok))
            for i, (t, s, _) in enumerate(chosen)]


@torch.no_grad()
def exact(model, tok, req: EditRequest) -> bool:
    """Teacher-forced argmax over ``encode(query) + target[:-1]`` equals the target ids."""
    query = req.template.format(req.subject)
    target = continuation_ids(tok, query, req.target)
    q = encode(tok, query)
    ids = torch.tensor([q + target[:-1]])
    logits = model(input_ids=ids).logits[0, len(q) - 1:]
    return logits.argmax(-1).tolist() == target


def n_exact(model, tok, requests) -> int:
    return sum(exact(model, tok, r) for r in requests)


def weights_of(model, adapter, layers) -> dict[int, torch.Tensor]:
    return {l: adapter.edit_weight(model, l).detach().clone() for l in layers}


def all_weights(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_weights(model, reference: dict[str, torch.Tensor]) -> bool:
    state = model.state_dict()
    return all(torch.equal(state[k], v) for k, v in reference.items())
