"""Causal tracing on tiny trained models: buckets, restoration identities, determinism,
the replayed computation against the straightforward one, the `editprobe trace` command
and its errors."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file
from cli_helpers import invoke

from editprobe.analysis.trace_output import trace_summary
from editprobe.analysis.tracing import (
    BUCKETS,
    KINDS,
    Prepared,
    RecordTrace,
    TraceError,
    TraceResult,
    TraceSettings,
    bucket_positions,
    prepare_record,
    recommend,
    run_trace,
    subject_embedding_std,
    trace_record,
    window_layers,
)
from editprobe.data.records import EditRecord
from editprobe.models.tiny import tiny_facts
from test_runs_helpers import counterfact_records
from tiny_trained import fresh, save_model

TOP_KEYS = {"model", "data", "n_requested", "n_known", "samples", "noise", "noise_std", "layers_window",
            "num_layers", "buckets", "kinds", "recommendation", "figures", "records"}


def _records(n: int = 6, template: str | None = None, wrong: bool = False) -> list[EditRecord]:
    facts = tiny_facts(0)
    objects = sorted({o for _, _, o in facts})
    out = []
    for i, (tmpl, subject, obj) in enumerate(facts[:n]):
        true = next(o for o in objects if o != obj) if wrong else obj
        out.append(EditRecord(id=f"r{i}", subject=subject, template=template or tmpl, target_new="x", target_true=true))
    return out


@pytest.fixture(scope="module")
def llama():
    torch.set_num_threads(1)
    return fresh("llama", steps=40)


@pytest.fixture(scope="module")
def gpt2():
    torch.set_num_threads(1)
    return fresh("gpt2", steps=40)


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    path = tmp_path_factory.mktemp("trace") / "model"
    save_model(path, steps=40)
    return path


# --- pure helpers ------------------------------------------------------------------------
def test_bucket_positions_follow_rome():
    # "<s> The Space Needle is in" -> subject tokens 2..3 of 6
    assert bucket_positions(1, 3, 8) == [[1], [2], [3], [4], [5, 6], [7]]
    # a one-token subject ending the prompt is first, last and last token at once
    assert bucket_positions(5, 5, 6) == [[5], [], [5], [], [], [5]]


def test_empty_buckets_are_nan_and_ignored_by_the_average():
    with_after = RecordTrace(Prepared(0, _records(1)[0], [1, 2, 3, 4], 1, 1, 0), 0.9, 0.1,
                             {k: np.full((4, 2), 0.5, dtype=np.float32) for k in KINDS})
    at_end = RecordTrace(Prepared(1, _records(1)[0], [1, 2, 3], 2, 2, 0), 0.8, 0.2,
                         {k: np.full((3, 2), 0.1, dtype=np.float32) for k in KINDS})
    assert np.isnan(at_end.buckets("mlp")[BUCKETS.index("first subsequent token")]).all()
    result = TraceResult([with_after, at_end], 2, 1.0, 2, TraceSettings())
    avg = result.buckets_by_layer("mlp")
    np.testing.assert_allclose(avg[BUCKETS.index("first subsequent token")], 0.5)  # only the first record
    np.testing.assert_allclose(avg[BUCKETS.index("last token")], 0.3)
    assert np.isnan(avg[BUCKETS.index("middle subject tokens")]).all()
    # JSON has no NaN: empty buckets become null
    summary = trace_summary(result, "m", "d")
    assert summary["kinds"]["mlp"]["buckets_by_layer"][1] == [None, None]
    json.dumps(summary, allow_nan=False)


def test_window_layers_and_recommendation_rule():
    assert window_layers("block", 3, 10, 30) == range(3, 4)
    assert window_layers("mlp", 0, 10, 30) == range(0, 5)
    assert window_layers("mlp", 15, 10, 30) == range(10, 20)
    assert window_layers("attn", 29, 10, 30) == range(24, 30)
    assert window_layers("mlp", 2, 1, 4) == range(2, 3)
    curve = np.zeros((6, 12))
    curve[2, 7] = 1.0
    rec = recommend(curve)
    assert (rec["kind"], rec["peak_layer"], rec["window"]) == ("mlp", 7, [3, 4, 5, 6, 7])
    curve[2, 7], curve[2, 1] = 0.0, 1.0
    assert recommend(curve)["window"] == [0, 1, 2, 3, 4]  # shifted right, never below layer 0
    assert recommend(np.zeros((6, 3)))["window"] == [0, 1, 2]  # fewer layers than the window
    assert "5 consecutive layers" in rec["rule"]


# --- tracing a model ---------------------------------------------------------------------
def test_run_trace_shapes_and_summary(llama):
    model, tok, adapter = llama
    settings = TraceSettings(samples=3, layers_window=1, seed=0)
    result = run_trace(model, tok, adapter, _records(6), settings)
    assert len(result.traces) == 6 and result.num_layers == 4 and result.noise_std > 0
    for t in result.traces:
        assert set(t.effects) == set(KINDS)
        assert all(a.shape == (len(t.prepared.ids), 4) for a in t.effects.values())
        assert t.p_clean > t.p_corrupted  # the noise hurts recall
    summary = trace_summary(result, "tiny", "facts", tok)
    assert set(summary) == TOP_KEYS
    assert summary["buckets"] == list(BUCKETS) and len(BUCKETS) == 6
    for kind in KINDS:
        grid = summary["kinds"][kind]["buckets_by_layer"]
        assert len(grid) == 6 and all(len(row) == 4 for row in grid)
        assert summary["kinds"][kind]["high"] > summary["kinds"][kind]["low"]
    assert summary["records"][0]["tokens"][-1].strip() == "Alice"
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())  # scoped hooks


def test_same_seed_same_arrays_other_seed_other_noise(llama):
    model, tok, adapter = llama
    runs = [run_trace(model, tok, adapter, _records(2), TraceSettings(samples=3, seed=s)) for s in (7, 7, 8)]
    for a, b in zip(runs[0].traces, runs[1].traces):
        assert a.p_corrupted == b.p_corrupted
        assert all(np.array_equal(a.effects[k], b.effects[k]) for k in KINDS)
    assert runs[0].traces[0].p_corrupted != runs[2].traces[0].p_corrupted


def test_restoring_the_clean_state_gives_back_the_clean_probability(llama):
    """A subject in the middle of the prompt: restoring the last block's output at the last
    token undoes the corruption (only the head reads it); restoring anything before the
    subject (never corrupted) changes nothing; restoring block 0 at the subject alone does
    not undo it, since layer 0 of later tokens already attended to the noisy embedding."""
    model, tok, adapter = llama
    record = _records(1, template="The mother tongue of {} is the")[0]
    prep = prepare_record(tok, record, 0)
    assert prep.subject_first == prep.subject_last < len(prep.ids) - 2
    t = trace_record(model, adapter, prep, noise_std=0.05, settings=TraceSettings(samples=4, noise=5.0, max_rows=20))
    full = t.p_clean - t.p_corrupted
    assert abs(full) > 1e-3
    assert t.effects["block"][-1, -1] == pytest.approx(full, abs=1e-5)
    assert t.effects["block"][prep.subject_last, 0] != pytest.approx(full, abs=1e-4)
    # Positions before the subject are skipped and written as exact zeros; computing them
    # (replayed, or with full forwards) gives zero too, which is what justifies the skip.
    settings = TraceSettings(samples=4, noise=5.0, max_rows=20)
    computed = trace_record(model, adapter, prep, 0.05, settings, _skip_before_subject=False)
    ref = trace_record(model, adapter, prep, 0.05, settings, reference=True)
    for kind in KINDS:
        assert not t.effects[kind][: prep.subject_first].any()
        for other in (computed, ref):
            np.testing.assert_allclose(other.effects[kind][: prep.subject_first], 0.0, atol=1e-5)
            np.testing.assert_allclose(other.effects[kind], t.effects[kind], atol=1e-5)


def test_last_layer_last_token_identity_on_known_records(llama):
    model, tok, adapter = llama
    result = run_trace(model, tok, adapter, _records(4), TraceSettings(samples=5))
    for t in result.traces:
        assert t.effects["block"][-1, -1] == pytest.approx(t.p_clean - t.p_corrupted, abs=1e-5)
        # the subject ends these prompts, so the clean block-0 state there is all that was lost
        assert t.effects["block"][-1, 0] == pytest.approx(t.p_clean - t.p_corrupted, abs=1e-5)


def test_zero_noise_has_no_effect(llama):
    model, tok, adapter = llama
    result = run_trace(model, tok, adapter, _records(3), TraceSettings(samples=2, noise=0.0))
    for t in result.traces:
        assert t.p_corrupted == pytest.approx(t.p_clean, abs=1e-5)
        for kind in KINDS:
            np.testing.assert_allclose(t.effects[kind], 0.0, atol=1e-5)


def test_gpt2_conv1d_model_traces(gpt2):
    model, tok, adapter = gpt2
    result = run_trace(model, tok, adapter, _records(8), TraceSettings(samples=3, layers_window=2))
    assert result.traces and any("not known" in s for s in result.skipped)
    for t in result.traces:
        assert t.effects["mlp"].shape == (len(t.prepared.ids), 4)
        assert t.effects["block"][-1, -1] == pytest.approx(t.p_clean - t.p_corrupted, abs=1e-5)
    assert 0 <= result.recommendation()["peak_layer"] < 4


@pytest.mark.parametrize("arch", ["llama", "gpt2", "gemma2"])
def test_replayed_computation_equals_the_straightforward_one(arch, request):
    """Starting each forward at its first restored layer and position (from the corrupted
    run's states and keys/values) gives the full forwards' effects. Subjects in the middle
    (one and three tokens) and, where there is no BOS, at the start; the target is the
    clean argmax so the effects are large. gemma2's sliding-window cache takes the path
    that feeds every position."""
    torch.set_num_threads(1)
    model, tok, adapter = request.getfixturevalue(arch) if arch != "gemma2" else fresh(arch, steps=40)
    cases = [("The mother tongue of {} French is", "Alice"), ("The mother tongue of {} French is", "Alice Bob Carol"),
             ("{} plays the", "Dave Erin")]
    largest = 0.0
    for template, subject in cases:
        record = EditRecord(id="x", subject=subject, template=template, target_new="x", target_true="French")
        prep = prepare_record(tok, record, 0)
        prep = dataclasses.replace(prep, target_id=int(model(torch.tensor([prep.ids])).logits[0, -1].argmax()))
        std = subject_embedding_std(model, adapter, [prep])
        for window, max_rows in ((2, 8), (3, 512)):
            settings = TraceSettings(samples=3, noise=3.0, layers_window=window, max_rows=max_rows)
            fast = trace_record(model, adapter, prep, std, settings)
            ref = trace_record(model, adapter, prep, std, settings, reference=True)
            assert (fast.p_clean, fast.p_corrupted) == (ref.p_clean, ref.p_corrupted)
            for kind in KINDS:
                np.testing.assert_allclose(fast.effects[kind], ref.effects[kind], atol=1e-5,
                                           err_msg=f"{kind}, subject {subject!r}")
                largest = max(largest, float(np.abs(ref.effects[kind]).max()))
    assert largest > 0.01  # the comparison is not between near-zero effects
    assert not any(m._forward_hooks or m._forward_pre_hooks for m in model.modules())
    assert all(type(b).__name__ != "_StandIn" for b in adapter.block_list(model))  # blocks put back


def test_settings_and_unknown_records_are_errors(llama):
    model, tok, adapter = llama
    with pytest.raises(TraceError, match="layers window"):
        run_trace(model, tok, adapter, _records(2), TraceSettings(layers_window=0))
    with pytest.raises(TraceError, match="samples"):
        run_trace(model, tok, adapter, _records(2), TraceSettings(samples=0))
    with pytest.raises(TraceError, match="knows none of the 3 records"):
        run_trace(model, tok, adapter, _records(3, wrong=True), TraceSettings(samples=2))


# --- the command -------------------------------------------------------------------------
def test_trace_command_writes_outputs_and_prints_recommendation(model_dir, tmp_path):
    data = tmp_path / "cf.json"
    data.write_text(json.dumps(counterfact_records(4)))
    out = tmp_path / "out"
    result = invoke(["trace", "--model", str(model_dir), "--data", str(data), "--n", "4",
                                      "--out", str(out), "--samples", "3", "--layers-window", "2", "--threads", "1"])
    assert result.exit_code == 0, result.output
    assert "suggested MEMIT layers" in result.output
    summary = json.loads((out / "trace.json").read_text())
    assert set(summary) == TOP_KEYS
    assert summary["n_requested"] == 4 and 1 <= summary["n_known"] <= 4 and summary["num_layers"] == 4
    rec = summary["recommendation"]
    assert rec["kind"] == "mlp" and rec["window"] == [0, 1, 2, 3] and f"{rec['window']}" in result.output
    for name in summary["figures"].values():
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    arrays = load_file(str(out / "trace_records.safetensors"))
    assert set(arrays) == {f"{k}/{i}" for k in KINDS for i in range(summary["n_known"])}
    assert arrays["block/0"].shape == (summary["records"][0]["num_positions"], 4)


@pytest.mark.parametrize("args, message", [
    (["--n", "0"], "--n must be at least 1"),
    (["--layers-window", "0"], "layers window must be at least 1"),
    (["--samples", "0"], "samples must be at least 1"),
])
def test_trace_command_bad_settings(args, message, tmp_path):
    result = invoke(["trace", "--out", str(tmp_path / "o"), *args])
    assert result.exit_code == 2
    assert message in result.output and not (tmp_path / "o").exists()


def test_trace_command_unknown_model_and_nothing_known(model_dir, tmp_path):
    data = tmp_path / "cf.json"
    records = counterfact_records(3)
    data.write_text(json.dumps(records))
    result = invoke(["trace", "--model", str(tmp_path / "no-such-model"), "--data", str(data),
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "no such directory" in result.output
    for r in records:  # every true object replaced by the new one: the model knows none
        r["requested_rewrite"]["target_true"] = r["requested_rewrite"]["target_new"]
    data.write_text(json.dumps(records))
    result = invoke(["trace", "--model", str(model_dir), "--data", str(data), "--n", "3",
                                      "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and "knows none of the 3 records" in result.output
    assert not (tmp_path / "o" / "trace.json").exists()
