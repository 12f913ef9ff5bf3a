"""Classic metrics: paraphrase efficacy (exact match of o* after paraphrases) and
neighborhood specificity (the unedited model's own continuation still produced)."""

from __future__ import annotations

import pytest
import torch

from editprobe.data import EditRecord, PromptAnswer, load_records
from editprobe.models.tiny import tiny_facts
from editprobe.models.tokens import continuation_ids
from editprobe.probes import neighborhood_reference, neighborhood_specificity, paraphrase_efficacy
from editprobe.probes.exact import exact_match_batch

torch.set_num_threads(1)


def _records() -> list[EditRecord]:
    facts = tiny_facts(0)[:12]
    records = []
    for i, (t, s, o) in enumerate(facts):
        other_t, other_s, other_o = facts[(i + 5) % len(facts)]
        records.append(EditRecord(
            id=f"r{i}", subject=s, template=t, target_new=o, target_true="Sydney",
            # The record's own fact (known) and another subject's prompt (o is rarely its answer).
            paraphrase_prompts=(t.format(s), other_t.format(other_s)) if i % 4 else (),
            neighborhood=(PromptAnswer(prompt=other_t.format(other_s), answers=(other_o,)),
                          PromptAnswer(prompt=t.format(s), answers=(o,))),
        ))
    return records


def test_paraphrase_efficacy_is_a_per_record_mean(trained_llama):
    model, tok = trained_llama.model, trained_llama.tokenizer
    records = _records()
    result = paraphrase_efficacy(model, tok, records, decode_extra=2)
    with_prompts = [r for r in records if r.paraphrase_prompts]
    assert result.n_records == len(with_prompts) == 9 and result.n_without_prompts == 3 and result.n_prompts == 18
    rates = [sum(exact_match_batch(model, tok, [(p, r.target_new) for p in r.paraphrase_prompts])) / 2
             for r in with_prompts]
    assert result.exact == pytest.approx(100 * sum(rates) / len(rates))
    assert 0 < result.value < 100  # the own prompts match, most others do not
    assert all(s.decode_match == s.match and s.probe == "classic/paraphrase-efficacy" for s in result.samples)


def test_neighborhood_specificity_uses_the_unedited_models_own_answers(trained_llama):
    model, tok = trained_llama.model, trained_llama.tokenizer
    records = _records()
    ref = neighborhood_reference(model, tok, records)
    assert len(ref.prompts) == 24
    for p in ref.prompts:  # as long as the dataset answer, in tokens
        assert len(p.reference_ids) == len(continuation_ids(tok, p.prompt, p.dataset_answer))
    # The unedited model reproduces its own greedy continuations: 100 by construction.
    assert neighborhood_specificity(model, tok, ref).value == 100.0
    # A damaged model does not; the score is the per-record mean of exact matches.
    saved = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        torch.manual_seed(0)
        with torch.no_grad():
            for layer in model.model.layers[:2]:
                layer.mlp.down_proj.weight.add_(torch.randn_like(layer.mlp.down_proj.weight) * 0.5)
        damaged = neighborhood_specificity(model, tok, ref)
    finally:
        model.load_state_dict(saved)
    per_record: dict[str, list[bool]] = {}
    for s in damaged.samples:
        per_record.setdefault(s.record_id, []).append(s.match)
    expected = 100 * sum(sum(m) / len(m) for m in per_record.values()) / len(per_record)
    assert damaged.exact == pytest.approx(expected) and damaged.value < 100.0
    assert damaged.n_records == 12 and damaged.n_without_prompts == 0


@pytest.mark.integration
def test_neighborhood_reference_on_smollm2(smollm2):
    model, tok = smollm2.model, smollm2.tokenizer
    records = load_records("counterfact-sample", limit=3).records
    ref = neighborhood_reference(model, tok, records)
    assert len(ref.prompts) == sum(len(r.neighborhood) for r in records) > 0
    assert neighborhood_specificity(model, tok, ref).value == 100.0
