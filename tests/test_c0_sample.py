"""Which documents C0 reads (``mom2_sample``): a seeded random sample, not the first N, recorded
in the statistics' cache key and in every run's C0 metadata. Offline: the multi-shard dataset is
parquet files written here and read with `datasets` from the local directory, never the hub."""

from __future__ import annotations

import hashlib
import json
import random

import pytest

from editprobe.data import corpus as corpus_module
from editprobe.data.corpus import HFCorpus, load_corpus
from editprobe.editing import make_editor
from editprobe.editing.lte.covariance import CovarianceStore
from editprobe.models.tiny import tiny_model

SHARDS, ROWS_PER_SHARD, ROW_GROUP = 4, 60, 10
N = 30


def article(i: int) -> str:
    # page-id order with a length trend, as a dump's oldest articles differ from its newest
    return f"article {i}: " + " ".join(f"w{(i * 7 + k) % 50}" for k in range(3 + i % 17))


@pytest.fixture
def shards(tmp_path, monkeypatch):
    """A local dataset of SHARDS parquet files (the hub's file naming), each split into row
    groups of ROW_GROUP rows; `datasets` writes its cache under tmp_path."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    datasets = pytest.importorskip("datasets")
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    # `datasets` waits 5 s after an interleaved parquet stream closes (its guard against an
    # Arrow thread-shutdown crash, apache/arrow#45214): 5 s a stream; these files are a few kB.
    monkeypatch.setattr(datasets.config, "SLEEP_TIME_ON_THREADS_SHUTDOWN", 0)
    folder = tmp_path / "wiki"
    folder.mkdir()
    for s in range(SHARDS):
        rows = [{"id": str(i), "text": article(i)} for i in range(s * ROWS_PER_SHARD, (s + 1) * ROWS_PER_SHARD)]
        pq.write_table(pa.Table.from_pylist(rows), folder / f"train-{s:05d}-of-{SHARDS:05d}.parquet",
                       row_group_size=ROW_GROUP)
    return folder


def all_articles() -> list[str]:
    return [article(i) for i in range(SHARDS * ROWS_PER_SHARD)]


def shard_of(doc: str) -> int:
    return int(doc.split(":")[0].split()[1]) // ROWS_PER_SHARD


def test_a_streamed_random_sample_is_seeded_spread_over_the_shards_and_not_the_first_n(shards):
    def sample(seed: int) -> list[str]:
        return list(load_corpus(f"hf:{shards}", sample="random", seed=seed).texts(N))

    first = list(load_corpus(f"hf:{shards}").texts(N))
    assert first == all_articles()[:N]  # today's stream: the first N in file order
    once, again, other = sample(1), sample(1), sample(2)
    assert once == again  # seeded: the same documents in the same order
    assert len(set(once)) == N and set(once) <= set(all_articles())
    assert set(once) != set(other)
    assert set(once) != set(first) and len(set(once) & set(first)) < N // 2
    assert len({shard_of(d) for d in once}) >= 3  # row groups from across the split, not one file


def test_uniform_is_the_references_draw_a_seeded_permutation_of_every_row(shards):
    """The reference's procedure (random_sample=1): Python's Random(seed) shuffles all row
    indices and the first N are read, in that order."""
    order = list(range(SHARDS * ROWS_PER_SHARD))
    random.Random(7).shuffle(order)
    got = list(load_corpus(f"hf:{shards}", sample="uniform", seed=7).texts(N))
    assert got == [all_articles()[i] for i in order[:N]]


def test_wikipedia_draws_at_random_by_default_and_first_keeps_todays_stream(shards, monkeypatch):
    monkeypatch.setitem(corpus_module.NAMED_HF_CORPORA, "wikipedia", (str(shards), None, "train"))
    wiki = load_corpus("wikipedia")
    assert (wiki.sample, wiki.seed) == ("random", 1) and wiki.sampling() == {"sample": "random", "seed": 1}
    assert list(wiki.texts(N)) == list(load_corpus(f"hf:{shards}", sample="random", seed=1).texts(N))
    first = load_corpus("wikipedia", sample="first")
    assert first.sampling() == {"sample": "first"} and list(first.texts(N)) == all_articles()[:N]
    assert not wiki.remote  # a local directory: no hub check before work


def test_the_sampling_is_part_of_the_corpus_identity_and_first_keeps_the_old_one():
    ids = {(s, seed): load_corpus("wikipedia", sample=s, seed=seed).identity
           for s in ("first", "random", "uniform") for seed in (1, 2)}
    assert ids[("first", 1)] == ids[("first", 2)]  # the seed does not pick the first N
    assert len({ids[k] for k in ids if k[0] != "first"} | {ids[("first", 1)]}) == 5
    # statistics cached before sampling existed (the first N) keep their key
    old = hashlib.sha256(b"hf:wikimedia/wikipedia:20231101.en:train:text").hexdigest()[:16]
    assert ids[("first", 1)] == old == load_corpus("hf:wikimedia/wikipedia:20231101.en:train").identity


def test_a_local_file_draws_the_permutation_exactly_in_file_order(tmp_path):
    docs = [f"paragraph {i} of the file" for i in range(40)]
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(docs) + "\n")
    order = list(range(40))
    random.Random(3).shuffle(order)
    picked = sorted(order[:10])
    got = list(load_corpus(path, sample="random", seed=3).texts(10))
    assert got == [docs[i] for i in picked]
    assert got != docs[:10] and got != list(load_corpus(path, sample="random", seed=4).texts(10))
    assert list(load_corpus(path).texts(10)) == docs[:10]
    assert load_corpus(path, sample="random", seed=3).identity != load_corpus(path).identity
    assert list(load_corpus(path, sample="random", seed=3).texts(100)) == docs  # asked for more than there is


def test_a_first_n_c0_is_never_reused_for_a_random_one_and_the_run_records_the_sampling(shards, tmp_path):
    lm = tiny_model("llama")
    store = CovarianceStore(root=tmp_path / "stats", progress=False)

    def editor(**sampling):
        return make_editor("memit", lm.model, lm.tokenizer, "tiny", stats=store,
                           overrides={"mom2_corpus": f"hf:{shards}", "mom2_n_samples": N, **sampling})

    assert editor().c0_corpus().sample == "first"  # an hf: spec reads its first N unless asked
    first, sampled = editor(mom2_sample="first"), editor(mom2_sample="random")
    reseeded = editor(mom2_sample="random", mom2_sample_seed=5)
    c0_first = first.covariance(1)
    request = sampled.stats_request(sampled.layers)
    assert request["corpus_id"] != first.stats_request(first.layers)["corpus_id"]
    assert not store.has(lm.model, lm.tokenizer, **request)  # the first-N entry does not answer
    c0_random = sampled.covariance(1)
    assert not c0_random.equal(c0_first)
    assert reseeded.stats_request([1])["corpus_id"] != request["corpus_id"]

    info = sampled.c0_info()
    assert (info["sample"], info["seed"], info["documents"]) == ("random", 1, {"1": N, "2": N})
    assert info["corpus_identity"] == request["corpus_id"]
    assert first.c0_info()["sample"] == "first" and "seed" not in first.c0_info()
    # the store's own record: one corpus directory per sampling, each entry keyed by its corpus id
    records = [json.loads(p.read_text()) for p in (tmp_path / "stats").rglob("mom2_layer1_*.json")]
    assert sorted(r["key"]["corpus_id"] for r in records) == sorted(
        [first.stats_request([1])["corpus_id"], request["corpus_id"]])


def test_the_report_names_a_seeded_sample():
    from editprobe.report.tables import _c0_corpus

    assert _c0_corpus({"corpus": "wikipedia", "sample": "random", "seed": 1}) == "wikipedia (random sample, seed 1)"
    assert _c0_corpus({"corpus": "wikipedia", "sample": "first"}) == "wikipedia"
    assert _c0_corpus({"corpus": "wikipedia"}) == "wikipedia"  # a summary written before: the first N


def test_mom2_sample_is_checked_with_the_hparams():
    from editprobe.editing import HParamsError, resolve_hparams

    with pytest.raises(HParamsError, match="mom2_sample"):
        resolve_hparams("memit", "tiny", {"mom2_sample": "shuffled"})
    with pytest.raises(HParamsError, match="mom2_sample_seed"):
        resolve_hparams("memit", "tiny", {"mom2_sample_seed": -1})
    assert isinstance(load_corpus("wikipedia"), HFCorpus)


def test_a_run_records_the_sampling_in_its_summary_and_the_report_prints_it(run_ws, shards, tmp_path):
    from cli_helpers import invoke

    out = tmp_path / "run"
    result = invoke(["run", "--model", str(run_ws["model"]), "--hparams", "tiny", "--method", "memit", "--data",
                     str(run_ws["data"]), "--n", "3", "--batch-size", "3", "--negation-table",
                     str(run_ws["negations"]), "--probe", "negation", "--set", f"mom2_corpus=hf:{shards}",
                     "--set", "mom2_sample=random", "--set", "mom2_sample_seed=3", "--set", f"mom2_n_samples={N}",
                     "--out", str(out), "--threads", "1"])
    assert result.exit_code == 0, result.output
    c0 = json.loads((out / "summary.json").read_text())["results"][0]["c0"]
    assert (c0["corpus"], c0["sample"], c0["seed"], c0["asked"]) == (f"hf:{shards}:train", "random", 3, N)
    assert c0["corpus_identity"] == load_corpus(f"hf:{shards}", sample="random", seed=3).identity
    report = invoke(["report", str(out), "--out", str(tmp_path / "tables")])
    assert report.exit_code == 0, report.output
    assert f"hf:{shards}:train (random sample, seed 3)" in report.stdout


def test_a_checkpoint_continues_only_on_c0_from_the_same_sample(tmp_path):
    """Resuming a method mid-way re-reads C0 from the cache: its earlier batches were solved
    against the sample its checkpoint names (a checkpoint written before the setting: the first
    documents), so another sample stops with one line instead of mixing two C0s in one method."""
    from editprobe.editing.lte.state import StateError

    lm = tiny_model("llama")
    path = tmp_path / "c.txt"
    path.write_text("\n\n".join(f"paragraph {i} of the file" for i in range(40)) + "\n")

    def editor(**sampling):
        return make_editor("memit", lm.model, lm.tokenizer, "tiny", overrides={"mom2_corpus": str(path), **sampling})

    saved = editor(mom2_sample="random").save_state(tmp_path / "random")
    editor(mom2_sample="random").load_state(saved)
    with pytest.raises(StateError, match="C0 from another C0 corpus or sample"):
        editor(mom2_sample="random", mom2_sample_seed=2).load_state(saved)
    old = editor().save_state(tmp_path / "old")
    meta = json.loads((old / "state.json").read_text())
    del meta["c0_corpus"]  # as written before mom2_sample existed
    (old / "state.json").write_text(json.dumps(meta))
    editor().load_state(old)  # a local file reads its first documents unless asked
    with pytest.raises(StateError) as err:
        editor(mom2_sample="random").load_state(old)
    assert str(err.value) == (f"{old}: its batches were edited with C0 from the first documents of {path}, this editor "
                              f"reads {path} (sample random, seed 1): finish the run with the settings and editprobe "
                              "version that started it, or start it again")
