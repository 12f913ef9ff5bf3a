"""Hyperparameter profiles (the paper profile), which file a run reads and why, RECT's
reference mode, and the Wikipedia C0 corpus's checks before work."""

from __future__ import annotations

import pytest
import torch
from test_engine_helpers import corpus, fresh, random_edits, store

from editprobe.data.corpus import CorpusUnavailableError, HFCorpus, load_corpus
from editprobe.editing import lte_methods, make_editor, resolve_hparams
from editprobe.editing.settings.hparams import HParamsError, available
from editprobe.editing.lte.methods.rect import rect_mask
from editprobe.editing.settings.profiles import available_profiles, choose_hparams, load_profile
from editprobe.runs import RunConfig
from editprobe.runs.config import RunConfigError

PAPER_MODELS = {"meta-llama/Meta-Llama-3-8B-Instruct": ("llama3-8b-instruct", 0.1, 8192),
                "Qwen/Qwen2.5-7B-Instruct": ("qwen2.5-7b-instruct", 0.5, 4096)}


@pytest.mark.parametrize("model", sorted(PAPER_MODELS))
@pytest.mark.parametrize("method", sorted(lte_methods()))
def test_the_paper_profile_has_every_method_for_both_models(method, model):
    key, v_lr, max_len = PAPER_MODELS[model]
    choice = choose_hparams(method, model, profile="paper")
    assert choice.chosen_by == "profile paper"
    assert choice.file == f"editprobe/editing/settings/profiles/paper/{method}/{key}.yaml"
    hp = resolve_hparams(method, choice.path)
    assert hp.source and hp.method == method
    if method == "rome":  # one layer, rank one: no C0 adjustment and no K_p term
        assert hp.layers == [5] and hp.mom2_adjustment is False
        return
    # the shared AlphaEdit settings: decisive layers, value settings, C0 as the reference
    assert hp.layers == [4, 5, 6, 7, 8] and hp.v_lr == v_lr and hp.v_num_grad_steps == 25
    assert hp.preserve_previous is True
    assert (hp.mom2_corpus, hp.mom2_n_samples, hp.mom2_max_len, hp.mom2_dtype) == ("wikipedia", 100000, max_len,
                                                                                   "float32")
    if method == "rect":
        assert (hp.rect_mode, hp.rect_keep, hp.rect_score) == ("reference", 0.4, "relative")


def test_the_paper_profile_runs_float32_unless_a_dtype_is_given():
    assert "paper" in available_profiles() and load_profile("paper").dtype == "float32"
    assert RunConfig.build({"model": "Qwen/Qwen2.5-7B-Instruct", "profile": "paper"}).dtype == "float32"
    assert RunConfig.build({"profile": "paper", "dtype": "bfloat16"}).dtype == "bfloat16"
    assert RunConfig.build({}).dtype is None
    with pytest.raises(RunConfigError, match="field 'profile': unknown profile 'nope'; profiles: fe, paper, paper-code"):
        RunConfig.build({"profile": "nope"})


def test_a_run_saved_before_profiles_existed_keeps_its_identity():
    assert "profile" not in RunConfig.build({}).identity()  # so older runs still resume
    assert RunConfig.build({"profile": "paper"}).identity()["profile"] == "paper"


def test_an_explicit_hparams_wins_over_a_profile_and_a_profile_over_the_shipped_file(tmp_path):
    llama = "meta-llama/Meta-Llama-3-8B-Instruct"
    own = tmp_path / "mine.yaml"
    own.write_text("method: memit\nlayers: [3]\n")
    assert choose_hparams("memit", llama, hparams=str(own), profile="paper").chosen_by == "hparams"
    assert choose_hparams("memit", llama, hparams="tiny", profile="paper").file.endswith("hparams/memit/tiny.yaml")
    assert choose_hparams("memit", llama, profile="paper").chosen_by == "profile paper"
    shipped = choose_hparams("memit", llama)
    assert shipped.chosen_by == "shipped default" and shipped.file == "editprobe/editing/settings/hparams/memit/llama3-8b-instruct.yaml"
    assert len(shipped.sha256) == 64
    with pytest.raises(HParamsError, match="profile 'paper' has no memit hyperparameters for smollm2-135m"):
        choose_hparams("memit", "smollm2-135m", profile="paper")
    with pytest.raises(HParamsError, match="unknown profile 'nope'"):
        choose_hparams("memit", llama, profile="nope")


def test_a_settings_folder_gives_each_method_of_a_run_its_own_file(tmp_path):
    folder = tmp_path / "my-settings"
    folder.mkdir()
    (folder / "memit.yaml").write_text("method: memit\nlayers: [1, 2]\n")
    (folder / "ike.yaml").write_text("n_demos: 0\n")
    memit, ike = (choose_hparams(m, "my/model", hparams=str(folder), profile="paper") for m in ("memit", "ike"))
    assert (memit.path, ike.path) == (folder / "memit.yaml", folder / "ike.yaml")
    assert memit.chosen_by == ike.chosen_by == "hparams"
    assert resolve_hparams("memit", memit.path).layers == [1, 2] and resolve_hparams("ike", ike.path).n_demos == 0
    with pytest.raises(HParamsError, match=f"^settings folder {folder}: no rome.yaml in it"):
        choose_hparams("rome", "my/model", hparams=str(folder))


@pytest.mark.parametrize("key", ["gpt2-xl", "gpt-j-6b", "llama3-8b-instruct", "qwen2.5-7b-instruct"])
def test_shipped_configs_of_big_models_read_100k_wikipedia_articles(key):
    for method in lte_methods():
        if key not in available(method):
            continue
        hp = resolve_hparams(method, key)
        if method == "rome" and not hp.mom2_adjustment:
            continue  # no C0 at all
        assert (hp.mom2_corpus, hp.mom2_n_samples) == ("wikipedia", 100000), (method, key)


def test_rect_reference_mode_masks_the_full_spread_update_afterwards(tmp_path_factory):
    """Reference mode = MEMIT's spread update (later layers saw the full earlier updates),
    each layer's update then masked against the weight before the batch."""
    stats = store(tmp_path_factory)
    requests = random_edits(6, seed=3)

    def edit(method: str, overrides: dict):
        lm = fresh("llama")  # the one session model, its trained weights put back
        editor = make_editor(method, lm.model, lm.tokenizer, "tiny", overrides=overrides, stats=stats,
                             corpus=corpus())
        before = {l: lm.adapter.to_out_in(lm.adapter.edit_weight(lm.model, l).detach().float().clone())
                  for l in editor.layers}
        torch.manual_seed(0)
        report = editor.apply(requests)
        deltas = {l: lm.adapter.to_out_in(d).clone() for l, d in editor.deltas.items()}
        editor.restore()
        return editor.layers, before, deltas, report

    # MEMIT with rect/tiny.yaml's value settings: RECT's base update
    layers, before, full, _ = edit("memit", {"v_weight_decay": 0.1, "clamp_norm_factor": 8.0})
    rect_layers, _, got, report = edit("rect", {"rect_mode": "reference", "rect_keep": 0.4})
    assert rect_layers == layers
    for i, layer in enumerate(layers):
        expected = full[layer] * rect_mask(full[layer], before[layer], 0.4, "relative")
        assert torch.allclose(got[layer], expected, atol=1e-6), layer
        assert int((got[layer] != 0).sum()) == round(0.4 * got[layer].numel())
        assert report.layers[i].update_norm == pytest.approx(float(expected.norm()), rel=1e-5)
    # the in-loop mode differs: later layers see the masked earlier updates
    _, _, in_loop, _ = edit("rect", {"rect_keep": 0.4})
    assert torch.allclose(in_loop[layers[0]], got[layers[0]], atol=1e-6)  # the first layer is the same
    assert not torch.allclose(in_loop[layers[-1]], got[layers[-1]], atol=1e-4)


def test_the_wikipedia_corpus_is_a_pinned_snapshot_drawn_at_random():
    wiki = load_corpus("wikipedia")
    assert isinstance(wiki, HFCorpus) and wiki.name == "wikipedia"
    assert (wiki.dataset, wiki.config, wiki.split) == ("wikimedia/wikipedia", "20231101.en", "train")
    assert wiki.sampling() == {"sample": "random", "seed": 1}  # tests/test_c0_sample.py: what it draws
    first = load_corpus("wikipedia", sample="first")
    assert first.identity == load_corpus("hf:wikimedia/wikipedia:20231101.en:train").identity != wiki.identity


def test_an_unreachable_wikipedia_fails_in_one_line_saying_what_to_do(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CorpusUnavailableError) as err:
        load_corpus("wikipedia").check_available()
    message = str(err.value)
    assert "\n" not in message and message.startswith("C0 corpus wikipedia: HF_HUB_OFFLINE")
    assert "--set mom2_corpus=FILE.txt" in message and "--set mom2_corpus=wikitext-sample" in message
    monkeypatch.delenv("HF_HUB_OFFLINE")
    import huggingface_hub

    def no_network(self, *args, **kwargs):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(huggingface_hub.HfApi, "dataset_info", no_network)
    with pytest.raises(CorpusUnavailableError, match="cannot be reached or has no wikimedia/wikipedia"):
        load_corpus("wikipedia").check_available()


def test_a_run_records_its_hparams_file_dtype_and_c0_and_the_report_prints_them(run_ws, tmp_path):
    import json

    from cli_helpers import invoke

    out = tmp_path / "run"
    result = invoke(["run", "--model", str(run_ws["model"]), "--hparams", "tiny", "--method", "memit", "--data",
                     str(run_ws["data"]), "--n", "3", "--batch-size", "3", "--negation-table",
                     str(run_ws["negations"]), "--probe", "negation", "--set", f"mom2_corpus={run_ws['corpus']}",
                     "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    row = summary["results"][0]
    assert row["hparams_file"]["chosen_by"] == "hparams"
    assert row["hparams_file"]["file"] == "editprobe/editing/settings/hparams/memit/tiny.yaml"
    assert summary["model_dtype"] == "float32"
    read = set(row["c0"]["documents"].values())
    assert row["c0"]["corpus"] == str(run_ws["corpus"]) and len(read) == 1
    report = invoke(["report", str(out), "--out", str(tmp_path / "tables")])
    assert report.exit_code == 0, report.output
    line = next(l for l in report.stdout.splitlines() if l.startswith("| ") and "tiny.yaml" in l)
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[3:] == ["float32", str(run_ws["corpus"]), f"{read.pop()} of {row['c0']['asked']}",
                         "editprobe/editing/settings/hparams/memit/tiny.yaml", "hparams",
                         "95% bootstrap, seed 0, 2000 resamples; Wilson for proportions"]
    assert (tmp_path / "tables" / "settings.csv").is_file()


def test_an_edit_whose_c0_corpus_cannot_be_reached_stops_before_any_work(run_ws, tmp_path, monkeypatch):
    from cli_helpers import invoke

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "edit"
    result = invoke(["edit", "--model", str(run_ws["model"]), "--hparams", "tiny", "--method", "memit", "--data",
                     str(run_ws["data"]), "--n", "3", "--batch-size", "3", "--set", "mom2_corpus=wikipedia",
                     "--out", str(out)])
    assert result.exit_code == 2, result.output
    assert result.error_lines == [result.stderr.strip()]
    assert result.stderr.startswith("error: C0 corpus wikipedia: HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set. "
                                    "Point mom2_corpus at a local corpus")
    assert not out.exists()
