"""The mechanism analysis (docs/protocol.md#mechanism-analysis): m⁰ = W k, m¹ − m⁰ = the engine's δ,
the ratio / cosine formulas, record selection, weights untouched, and `editprobe analyze`."""

from __future__ import annotations

import json
import math

import pytest
import torch
from safetensors import safe_open
from test_runs_helpers import NEGATIONS, counterfact_records
from tiny_trained import save_model
from cli_helpers import invoke

from editprobe.analysis import mechanism
from editprobe.analysis.mechanism import (
    AnalysisError,
    Candidate,
    analyze_mechanism,
    answer_key,
    hparams_for_layer,
    mlp_outputs,
    ratio_and_cos,
    select_records,
    target_site,
    weights_unchanged,
)
from editprobe.analysis.mechanism_figures import tsne_perplexity
from editprobe.data.records import EditRecord
from editprobe.editing import make_editor, resolve_hparams
from editprobe.probes.generation import query_ids

ANALYSIS_KEYS = {"model", "method", "data", "layer", "n_requested", "n_selected", "n_scanned", "summary", "figures",
                 "records"}
SUMMARY_KEYS = {"ratio_mean", "ratio_median", "ratio_std", "cos_mean", "cos_median", "cos_std", "norm_m1_m0_mean",
                "norm_m2_m0_mean", "m0_differs_between_p_and_negp"}
RECORD_KEYS = {"record_id", "query", "negated_query", "subject", "target_new", "answer_p", "answer_negp", "ratio",
               "cos"}


def _negate(template: str, relation_id: str | None) -> str | None:
    return NEGATIONS.get(template)


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A trained tiny model (kept in memory and saved for the CLI), its facts as records and
    as a CounterFact file, and the user negation table."""
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("mechanism")
    loaded = save_model(root / "model", steps=60)
    raw = counterfact_records(16)
    (root / "cf.json").write_text(json.dumps(raw))
    (root / "neg.yaml").write_text("".join(f'"{k}": "{v}"\n' for k, v in NEGATIONS.items()))
    records = [EditRecord(id=str(r["case_id"]), subject=r["requested_rewrite"]["subject"],
                          template=r["requested_rewrite"]["prompt"],
                          target_new=r["requested_rewrite"]["target_new"]["str"]) for r in raw]
    return {"root": root, "loaded": loaded, "records": records}


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    monkeypatch.setenv("EDITPROBE_CACHE", str(tmp_path / "cache"))


def _editor(ws, method: str = "memit", **overrides):
    loaded = ws["loaded"]
    return make_editor(method, loaded.model, loaded.tokenizer, resolve_hparams(method, "tiny", overrides))


# --- formulas -----------------------------------------------------------------------------------
def test_ratio_and_cosine_on_hand_made_vectors():
    m0 = torch.tensor([[0.0, 0.0], [1.0, 1.0], [0.0, 0.0], [0.0, 0.0]])
    m1 = torch.tensor([[3.0, 0.0], [2.0, 1.0], [0.0, 0.0], [1.0, 0.0]])
    m2 = torch.tensor([[3.0, 4.0], [2.0, 1.0], [1.0, 0.0], [-1.0, 0.0]])
    ratio, cos = ratio_and_cos(m0, m1, m2)
    assert ratio[0].item() == pytest.approx(4 / 3) and cos[0].item() == pytest.approx(9 / 15)
    assert ratio[1].item() == 0.0 and cos[1].item() == pytest.approx(1.0)  # the target ignores "not"
    assert math.isnan(ratio[2].item()) and math.isnan(cos[2].item())  # ‖m¹−m⁰‖ = 0: undefined, not 0
    assert ratio[3].item() == pytest.approx(2.0) and cos[3].item() == pytest.approx(-1.0)


def test_summary_statistics_skip_undefined_values():
    mean, median, std = mechanism._stats(torch.tensor([1.0, 2.0, 4.0, 10.0, float("nan")]))
    assert mean == pytest.approx(4.25) and median == pytest.approx(3.0)  # the mean of the middle two
    assert std == pytest.approx(torch.tensor([1.0, 2.0, 4.0, 10.0]).std(unbiased=False).item())
    assert all(math.isnan(x) for x in mechanism._stats(torch.tensor([float("nan")])))
    assert mechanism.json_float(float("nan")) is None


def test_answer_key_compares_first_words():
    assert answer_key(" French. She was") == answer_key("french, and") == "french"
    assert answer_key("English") != answer_key("French")
    assert answer_key(" ...") == ""


def test_tsne_perplexity_is_valid_for_any_count():
    for n in (1, 2, 5, 35, 200):
        assert 0 < tsne_perplexity(3 * n) < 3 * n
    assert tsne_perplexity(105) == 30.0


# --- selection ----------------------------------------------------------------------------------
def test_selection_keeps_only_differing_answers(monkeypatch):
    records = [EditRecord(id=i, subject=s, template=t, target_new="x") for i, s, t in [
        ("a", "Ann", "The mother tongue of {}"), ("b", "Bea", "The mother tongue of {}"),
        ("c", "Cid", "The colour of {}"), ("d", "Dan", "The birthplace of {}")]]
    answers = {"The mother tongue of Ann": "French.", "Not the mother tongue of Ann": "English",
               "The mother tongue of Bea": "French.", "Not the mother tongue of Bea": "french, and",
               "The birthplace of Dan": "Paris", "Never the birthplace of Dan": "Rome"}
    monkeypatch.setattr(mechanism, "greedy_answers", lambda model, tok, queries, *a, **k: [answers[q] for q in queries])
    sel = select_records(None, None, records, 5, _negate)
    assert [c.record.id for c in sel.items] == ["a", "d"]  # b answers the same; c cannot be negated
    assert (sel.n_scanned, sel.n_unnegatable) == (4, 1)
    first = select_records(None, None, records, 1, _negate, chunk=2)
    assert [c.record.id for c in first.items] == ["a"] and first.n_scanned == 1  # stops once n qualified
    assert sel.items[1].negated_query == "Never the birthplace of Dan"
    with pytest.raises(AnalysisError, match="at least 1"):
        select_records(None, None, records, 0, _negate)


def test_selection_on_the_model_matches_independent_decoding(ws):
    loaded = ws["loaded"]
    model, tok = loaded.model, loaded.tokenizer
    records = ws["records"][:10]

    def first_word(query: str) -> str:
        ids = torch.tensor([query_ids(tok, query)])
        out = model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), max_new_tokens=4, do_sample=False,
                             pad_token_id=tok.pad_token_id)
        return answer_key(tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True))

    expected = [r.id for r in records if first_word(r.query) != first_word(NEGATIONS[r.template].format(r.subject))]
    assert 0 < len(expected) < len(records)  # both kinds occur, so the filter is exercised
    sel = select_records(model, tok, records, len(records), _negate)
    assert [c.record.id for c in sel.items] == expected


# --- the vectors --------------------------------------------------------------------------------
def test_m0_is_W_times_k_read_by_a_hook(ws):
    editor = _editor(ws)
    loaded, layer = ws["loaded"], editor.critical_layer
    cands = [Candidate(r, NEGATIONS[r.template], "", "") for r in ws["records"][:3]]
    requests = [c.request(False) for c in cands] + [c.request(True) for c in cands]
    m0 = mlp_outputs(editor, requests, layer)
    proj = loaded.adapter.mlp_out_module(loaded.model, layer)
    seen: list[torch.Tensor] = []
    handle = proj.register_forward_hook(lambda mod, args, out: seen.append(args[0].detach()))
    try:
        for req in requests:  # the tiny templates end with the subject: its last token is the query's last
            with torch.no_grad():
                loaded.model(input_ids=torch.tensor([query_ids(loaded.tokenizer, req.query)]))
    finally:
        handle.remove()
    W = loaded.adapter.edit_weight(loaded.model, layer)
    expected = torch.stack([W @ k[0, -1] for k in seen])
    torch.testing.assert_close(m0, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("method,site", [("memit", "block"), ("rome", "mlp")])
def test_m1_minus_m0_is_the_engines_delta(ws, method, site):
    editor = _editor(ws, method)
    weights = {k: v.clone() for k, v in ws["loaded"].model.state_dict().items()}
    result = analyze_mechanism(editor, ws["records"], n=3, negate_fn=_negate)
    after = ws["loaded"].model.state_dict()
    assert all(torch.equal(after[k], v) for k, v in weights.items())  # nothing was edited
    assert result.site == site and result.layer == editor.critical_layer
    assert len(result.items) == 3 and result.m1.shape == (3, 64)
    requests = [c.request(False) for c in result.items] + [c.request(True) for c in result.items]
    targets = editor.compute_targets(requests)  # the same batch the analysis optimized
    delta = (targets.z[site] - targets.anchor[site]).cpu()
    torch.testing.assert_close(result.m1 - result.m0, delta[:3], atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(result.m2 - result.m0_negp, delta[3:], atol=1e-4, rtol=1e-4)
    assert (result.m1 - result.m0).norm(dim=-1).min() > 0  # the optimization moved
    if site == "mlp":  # ROME's anchor is m⁰ itself, so m¹ is its z
        torch.testing.assert_close(result.m1, targets.z["mlp"][:3].cpu(), atol=1e-4, rtol=1e-4)
    # "Not the mother tongue of {}" puts the negation before the subject: m⁰ differs there
    differs = result.per_record()["m0_differs"]
    for c, d in zip(result.items, differs.tolist()):
        assert d == (c.negated_query.split()[0] in ("Not", "Never"))
    s = result.summary()
    assert set(s) == SUMMARY_KEYS and s["m0_differs_between_p_and_negp"] == int(differs.sum())


def test_target_site_per_method(ws):
    expected = {"memit": "block", "alphaedit": "block", "emmet": "block", "rome": "mlp", "pmet": "mlp",
                "adaedit": "mlp", "namet": "block", "memit_lti": "block", "prune": "block", "rect": "block"}
    for method, site in expected.items():
        assert target_site(_editor(ws, method)) == site, method


def test_another_layer_becomes_a_one_layer_target(ws):
    hp = resolve_hparams("memit", "tiny", {"mom2_update_weight": [10.0, 20.0]})
    assert hparams_for_layer(hp, 2) is hp  # the critical layer: unchanged
    one = hparams_for_layer(hp, 1)
    assert one.layers == [1] and one.mom2_update_weight == 10.0 and one.v_lr == hp.v_lr
    assert hparams_for_layer(hp, 3).layers == [3]
    loaded = ws["loaded"]
    assert make_editor("memit", loaded.model, loaded.tokenizer, one).critical_layer == 1


def test_weight_guard_restores_and_fails_on_a_write(ws):
    loaded = ws["loaded"]
    w = loaded.adapter.edit_weight(loaded.model, 1)
    before = w.detach().clone()
    with pytest.raises(RuntimeError, match="wrote to model weights"):
        with weights_unchanged(loaded.model, loaded.adapter, [1]):
            with torch.no_grad():
                w.add_(1.0)
    assert torch.equal(w, before)


def test_no_qualifying_record_is_an_error(ws):
    with pytest.raises(AnalysisError, match="no record qualifies"):
        analyze_mechanism(_editor(ws), ws["records"][:3], n=2, negate_fn=lambda t, r: None)


# --- the command --------------------------------------------------------------------------------
def _cli(ws, out, *extra):
    root = ws["root"]
    method = [] if "--method" in extra else ["--method", "memit"]  # analyze takes one --method
    return invoke([
        "analyze", "--model", str(root / "model"), *method, "--data", str(root / "cf.json"),
        "--out", str(out), "--hparams", "tiny", "--negation-table", str(root / "neg.yaml"), "--threads", "1",
        *extra])


def test_cli_writes_analysis_vectors_and_figures(ws, tmp_path):
    out = tmp_path / "out"
    result = _cli(ws, out, "--n", "4", "--layer", "1", "--seed", "0")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "analysis.json").read_text())
    assert set(report) == ANALYSIS_KEYS and set(report["summary"]) == SUMMARY_KEYS
    assert report["layer"] == 1 and report["method"] == "memit" and report["n_requested"] == 4
    assert report["n_selected"] == len(report["records"]) == 4 and report["n_scanned"] >= 4
    assert report["figures"] == {"pca": "analysis_pca.png", "tsne": "analysis_tsne.png"}
    assert all(RECORD_KEYS <= set(r) for r in report["records"])
    assert all(r["answer_p"] != r["answer_negp"] for r in report["records"])
    for name in report["figures"].values():
        assert (out / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with safe_open(str(out / "vectors.safetensors"), "pt") as f:
        assert {"m0", "m1", "m2"} <= set(f.keys())
        assert all(f.get_tensor(k).shape == (4, 64) and f.get_tensor(k).dtype == torch.float32
                   for k in ("m0", "m1", "m2"))
        assert f.metadata()["layer"] == "1" and f.metadata()["site"] == "block"
    assert "‖m¹−m²‖ / ‖m¹−m⁰‖" in result.output and "cos(m¹−m⁰, m²−m⁰)" in result.output
    assert str(out / "analysis.json") in result.output and "analysis_tsne.png" in result.output


@pytest.mark.parametrize("args,message", [
    (["--n", "0"], "--n must be at least 1"),
    (["--n", "2", "--layer", "7"], "outside the model's layers 0..3"),
    (["--n", "2", "--method", "nope"], "unknown method 'nope'"),
])
def test_cli_bad_input_is_one_clear_error(ws, tmp_path, args, message):
    result = _cli(ws, tmp_path / "out", *args)
    assert result.exit_code == 2
    assert message in result.output and "Traceback" not in result.output


def test_cli_no_negatable_record_is_one_clear_error(ws, tmp_path):
    root = ws["root"]
    result = invoke([  # no table: no rule negates the verb-less tiny templates
        "analyze", "--model", str(root / "model"), "--data", str(root / "cf.json"), "--out", str(tmp_path / "o"),
        "--hparams", "tiny", "--n", "2"])
    assert result.exit_code == 2 and "no record qualifies" in result.output
