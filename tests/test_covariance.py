"""C0 accumulation against a direct computation, the truncated pass, and the cache keys."""

from __future__ import annotations

import copy
import random

import pytest
import torch

from editprobe.editing.lte import gram
from editprobe.editing.lte.corpus_batches import DocumentBatches
from editprobe.editing.lte.covariance import CovarianceStore, accumulate_second_moment, model_fingerprint
from editprobe.editing.lte.solvers import NumericalError, nullspace_projector
from editprobe.models.loading import LoadedModel
from editprobe.models.tiny import tiny_model

WORDS = ("The capital of France is Paris . Danielle Darrieux was born in Paris . Michael Jordan plays "
         "basketball . The official language of Italy is Italian . Apple was developed by Steve Jobs").split()


def corpus(n: int = 12, seed: int = 0, min_words: int = 2, max_words: int = 40) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(WORDS) for _ in range(rng.randint(min_words, max_words))) for _ in range(n)]


def direct_second_moment(model, tok, adapter, layer: int, docs: list[str], max_len: int) -> tuple[torch.Tensor, int]:
    """Mean k kᵀ from one full, unpadded forward pass per document with a plain hook."""
    keys: list[torch.Tensor] = []
    handle = adapter.mlp_out_module(model, layer).register_forward_pre_hook(lambda m, args: keys.append(args[0][0]))
    try:
        with torch.no_grad():
            for doc in docs:
                ids = tok(doc, add_special_tokens=True)["input_ids"][:max_len]
                model(input_ids=torch.tensor([ids]))
    finally:
        handle.remove()
    k = torch.cat(keys).double()
    return k.T @ k / k.shape[0], k.shape[0]


class ForwardCounter:
    def __init__(self, module: torch.nn.Module) -> None:
        self.calls = 0
        self.handle = module.register_forward_pre_hook(self._hook)

    def _hook(self, module, args) -> None:
        self.calls += 1


@pytest.fixture(scope="module")
def llama():
    return tiny_model("llama")


@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_matches_direct_computation_with_padding_and_truncation(model_type):
    model, tok, adapter = tiny_model(model_type)
    docs = corpus(12)
    max_len = 20  # shorter than the longest documents: truncation is exercised too
    stats = accumulate_second_moment(model, tok, adapter, [1, 2], docs, max_len=max_len, batch_size=4, progress=False)
    lengths = [len(tok(d)["input_ids"]) for d in docs]
    assert len(set(lengths)) > 3 and max(lengths) > max_len  # padded batches and truncated documents
    for layer in (1, 2):
        expected, n_tok = direct_second_moment(model, tok, adapter, layer, docs, max_len)
        assert stats[layer].count == n_tok == sum(min(n, max_len) for n in lengths)
        assert stats[layer].n_docs == len(docs)
        c0 = stats[layer].mean_second_moment()
        assert c0.dtype == torch.float32 and c0.shape == (128, 128)
        torch.testing.assert_close(c0.double(), expected, atol=1e-5, rtol=1e-4)


@pytest.fixture(params=["syrk", "blocks"])
def gram_path(request, monkeypatch):
    """BLAS syrk, or the torch fallback with 48-column blocks, which split the tiny models'
    d_ff = 128 unevenly (48, 48, 32): block edges and the narrower last block are exercised."""
    if request.param == "blocks":
        monkeypatch.setattr(gram, "_ssyrk", None)
        monkeypatch.setattr(gram, "_dsyrk", None)
        monkeypatch.setattr(gram, "_GRAM_BLOCK", 48)
    else:
        assert gram._ssyrk is not None
    return request.param


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("model_type", ["llama", "gpt2"])
def test_fast_path_equals_a_plain_computation_on_a_tiny_random_model(model_type, dtype, gram_path):
    model, tok, adapter = tiny_model(model_type)
    docs = corpus(10, seed=3)
    for batch_size in (4, 1):  # padded batches (masked copy) and single rows (no padding: a view)
        stats = accumulate_second_moment(model, tok, adapter, [0, 2], docs, max_len=24, dtype=dtype,
                                         batch_size=batch_size, progress=False)
        for layer in (0, 2):
            total = stats[layer].mom2_sum
            assert total.dtype == dtype and torch.equal(total, total.T)  # exactly symmetric
            expected, n_tok = direct_second_moment(model, tok, adapter, layer, docs, 24)
            assert stats[layer].count == n_tok
            tol = dict(atol=1e-6, rtol=1e-5) if dtype == torch.float32 else dict(atol=1e-9, rtol=1e-9)
            torch.testing.assert_close(stats[layer].mean_second_moment().double(), expected, **tol)


@pytest.mark.parametrize("keys_dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("total_dtype", [torch.float32, torch.float64])
def test_add_gram_accumulates_the_full_product(keys_dtype, total_dtype, gram_path):
    torch.manual_seed(0)
    total = torch.zeros(130, 130, dtype=total_dtype)
    batches = [torch.randn(n, 130).to(keys_dtype) for n in (7, 50, 1)]
    for keys in batches:
        gram.add_gram(total, keys)
    k = torch.cat(batches).double()
    torch.testing.assert_close(gram.symmetric(total).double(), k.T @ k, atol=1e-4, rtol=1e-5)


def test_document_batches_keep_every_token_and_count_every_document():
    _, tok, _ = tiny_model("llama")
    docs = ["", " "] + corpus(9, seed=1)
    reader = DocumentBatches(tok, docs, n_docs=7, max_len=15, batch_size=3, pool_docs=4)
    batches = list(reader)
    rows = [b.input_ids[i, : b.lengths[i]].tolist() for b in batches for i in range(len(b.lengths))]
    assert reader.docs_read == 7 and len(batches) == 3  # pools of 4 documents (3 + 1 rows) and 3 (3 rows)
    assert sorted(rows) == sorted(tok(d)["input_ids"][:15] for d in docs[2:9])
    assert all(b.attention_mask.sum() == sum(b.lengths) and b.padding_side == "right" for b in batches)


def test_float64_accumulation(llama):
    model, tok, adapter = llama
    docs = corpus(6)
    stats = accumulate_second_moment(model, tok, adapter, [0], docs, dtype=torch.float64, progress=False)
    expected, _ = direct_second_moment(model, tok, adapter, 0, docs, 1024)
    assert stats[0].mom2_sum.dtype == torch.float64
    torch.testing.assert_close(stats[0].mean_second_moment(), expected, atol=1e-6, rtol=1e-5)


def test_one_truncated_pass_stops_after_the_deepest_layer(llama):
    model, tok, adapter = llama
    deeper = ForwardCounter(adapter.block(model, 3))
    deepest_requested = ForwardCounter(adapter.block(model, 2))
    head = ForwardCounter(model.get_submodule(adapter.lm_head))
    top = ForwardCounter(model)
    projected = []  # the deepest layer's output projection is not needed: the pass ends before it runs
    done = adapter.mlp_out_module(model, 2).register_forward_hook(lambda m, args, out: projected.append(1))
    try:
        accumulate_second_moment(model, tok, adapter, [2, 0, 1], corpus(8), batch_size=4, progress=False)
    finally:
        done.remove()
        for c in (deeper, deepest_requested, head, top):
            c.handle.remove()
    assert deeper.calls == 0 and head.calls == 0 and not projected
    assert deepest_requested.calls == top.calls == 2  # every layer from the same passes: 8 docs / 4 rows


def test_max_len_and_model_context_cap(llama):
    model, tok, adapter = llama
    docs = corpus(3, min_words=300, max_words=300)
    assert min(len(tok(d)["input_ids"]) for d in docs) > 256  # longer than the tiny model's 256 positions
    assert accumulate_second_moment(model, tok, adapter, [0], docs, max_len=7, progress=False)[0].count == 21
    assert accumulate_second_moment(model, tok, adapter, [0], docs, max_len=10**6, progress=False)[0].count == 3 * 256


def test_n_docs_limits_the_documents_read(llama):
    model, tok, adapter = llama
    docs = ["", "   "] + corpus(10)  # blank documents are skipped, not counted
    stats = accumulate_second_moment(model, tok, adapter, [0], docs, n_docs=4, progress=False)[0]
    assert stats.n_docs == 4
    assert stats.count == sum(len(tok(d)["input_ids"]) for d in docs[2:6])


def test_nan_in_the_model_names_the_layer():
    model, tok, adapter = tiny_model("llama")
    model.get_submodule(adapter.path("mlp", 1)).up_proj.weight.data[0, 0] = float("nan")
    with pytest.raises(NumericalError, match="layer 1"):
        accumulate_second_moment(model, tok, adapter, [1], corpus(3), progress=False)


# ------------------------------------------------------------------ fingerprint


def test_fingerprint_sees_any_single_weight_change():
    model = tiny_model("llama").model
    base = model_fingerprint(model)
    assert model_fingerprint(model) == base
    assert model_fingerprint(tiny_model("llama", seed=1).model) != base
    w = model.get_submodule("model.layers.2.mlp.down_proj").weight
    for index in [(0, 0), (17, 93), (63, 127)]:  # include entries a strided sample would skip
        old = w.data[index].clone()
        w.data[index] = torch.nextafter(old, old + 1)  # the smallest possible change
        assert model_fingerprint(model) != base, index
        w.data[index] = old
    assert model_fingerprint(model) == base
    emb = model.get_input_embeddings().weight
    emb.data[123, 45] += 1e-3
    assert model_fingerprint(model) != base
    emb.data[123, 45] -= 1e-3


def test_fingerprint_sees_the_weight_dtype():
    model = tiny_model("gpt2").model
    base = model_fingerprint(model)
    assert model_fingerprint(model.to(torch.bfloat16)) != base
    assert model_fingerprint(model.to(torch.float64)) != base


# ------------------------------------------------------------------ the store


def _get(store, loaded, texts, calls: list[int] | None = None, **overrides):
    model, tok, adapter = loaded

    def factory():
        if calls is not None:
            calls.append(1)
        return iter(texts)

    kwargs = dict(layers=[1, 2], corpus_id="toy", n_docs=8, max_len=64, batch_size=4)
    kwargs.update(overrides)
    return store.get(model, tok, adapter, texts_factory=factory, **kwargs)


def test_cache_hit_runs_no_model_and_reads_no_corpus(tmp_path):
    loaded = tiny_model("llama")
    store = CovarianceStore(tmp_path, progress=False)
    texts, calls = corpus(10), []
    first = _get(store, loaded, texts, calls)
    counter = ForwardCounter(loaded.model)
    second = _get(store, loaded, texts, calls)
    counter.handle.remove()
    assert counter.calls == 0 and len(calls) == 1
    for layer in (1, 2):
        assert torch.equal(first[layer].mom2_sum, second[layer].mom2_sum)
        assert first[layer].count == second[layer].count > 0 and second[layer].n_docs == 8
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert files == ["mom2_layer1_n8_len64_float32.json", "mom2_layer1_n8_len64_float32.safetensors",
                     "mom2_layer2_n8_len64_float32.json", "mom2_layer2_n8_len64_float32.safetensors"]


@pytest.mark.parametrize(
    "change",
    [dict(n_docs=6), dict(corpus_id="other"), dict(max_len=32), dict(dtype=torch.float64), dict(model_id="renamed"),
     "weight", "tokenizer"],
    ids=["n_docs", "corpus_id", "max_len", "dtype", "model_id", "weight", "tokenizer"],
)
def test_any_key_change_misses_the_cache(tmp_path, change):
    loaded = tiny_model("llama")
    store = CovarianceStore(tmp_path, progress=False)
    texts = corpus(10)
    first = _get(store, loaded, texts)
    if change == "weight":
        loaded.adapter.edit_weight(loaded.model, 1).data[5, 7] += 1e-4
        change = {}
    elif change == "tokenizer":  # a tokenizer that no longer adds BOS gives other token ids
        tok = copy.deepcopy(loaded.tokenizer)
        tok.backend_tokenizer.post_processor = None
        loaded = LoadedModel(loaded.model, tok, loaded.adapter, loaded.name)
        change = {}
    counter = ForwardCounter(loaded.model)
    second = _get(store, loaded, texts, **change)
    counter.handle.remove()
    assert counter.calls > 0
    assert len(list(tmp_path.rglob("*.json"))) == 4  # a second entry beside the first, not an overwrite
    if set(change) & {"n_docs", "max_len", "dtype"} or not change:  # these change the statistic itself
        assert not torch.equal(first[2].mom2_sum.double(), second[2].mom2_sum.double())


def test_max_len_beyond_the_context_shares_the_capped_entry(tmp_path):
    loaded = tiny_model("llama")
    store = CovarianceStore(tmp_path, progress=False)
    _get(store, loaded, corpus(10), max_len=256)
    counter = ForwardCounter(loaded.model)
    _get(store, loaded, corpus(10), max_len=5000)  # capped at the model's 256 positions: same statistic
    counter.handle.remove()
    assert counter.calls == 0


def test_only_missing_layers_are_computed(tmp_path):
    loaded = tiny_model("llama")
    store = CovarianceStore(tmp_path, progress=False)
    texts = corpus(8)
    first = _get(store, loaded, texts, layers=[1])
    deeper = ForwardCounter(loaded.adapter.block(loaded.model, 3))
    top = ForwardCounter(loaded.model)
    both = _get(store, loaded, texts, layers=[1, 2])
    deeper.handle.remove()
    top.handle.remove()
    assert top.calls == 2 and deeper.calls == 0  # one pass over the 8 documents, for layer 2 only
    assert torch.equal(both[1].mom2_sum, first[1].mom2_sum)
    direct, _ = direct_second_moment(*loaded, 2, texts, 64)
    torch.testing.assert_close(both[2].mean_second_moment().double(), direct, atol=1e-5, rtol=1e-4)


def test_projector_is_cached_beside_the_statistics(tmp_path):
    model, tok, adapter = loaded = tiny_model("llama")
    store = CovarianceStore(tmp_path, progress=False)
    texts = corpus(10)
    kw = dict(corpus_id="toy", n_docs=8, max_len=64, texts_factory=lambda: iter(texts))
    projs = store.projector(model, tok, adapter, [1, 2], threshold=0.05, mode="relative", **kw)
    stats = _get(store, loaded, texts)
    P, info = projs[2]
    P_direct, info_direct = nullspace_projector(stats[2].mean_second_moment(), 0.05, "relative")
    assert info == info_direct and 0 < info.dim < 128
    torch.testing.assert_close(P, P_direct)
    counter = ForwardCounter(model)
    again = store.projector(model, tok, adapter, [1, 2], threshold=0.05, mode="relative", **kw)
    other = store.projector(model, tok, adapter, [2], threshold=0.2, mode="relative", **kw)
    counter.handle.remove()
    assert counter.calls == 0  # the projector hit, and a new threshold reused the statistics
    assert torch.equal(again[2][0], P) and again[2][1] == info
    assert other[2][1].dim > info.dim and other[2][1].threshold == 0.2
    assert len(list(tmp_path.rglob("proj_*.safetensors"))) == 3


# ------------------------------------------------------------------ damaged entries, locks


def test_has_says_no_for_a_damaged_entry_and_get_heals_it(tmp_path):
    import json

    model, tok, adapter = loaded = tiny_model("llama")
    store = CovarianceStore(tmp_path, progress=False)
    first = _get(store, loaded, corpus(10))
    request = dict(layers=[1, 2], corpus_id="toy", n_docs=8, max_len=64)
    assert store.has(model, tok, **request)
    (tensors,) = tmp_path.rglob("mom2_layer2_*.safetensors")
    meta = tensors.with_suffix(".json")
    sound_tensors, sound_meta = tensors.read_bytes(), meta.read_text()
    for damage in (lambda: tensors.write_bytes(sound_tensors[:100]), lambda: meta.write_text("{"),
                   lambda: meta.write_text(json.dumps({**json.loads(sound_meta), "count": 0}))):
        damage()
        assert not store.has(model, tok, **request)
        with pytest.warns(UserWarning, match="damaged cache entry"):
            healed = _get(store, loaded, corpus(10))
        assert torch.equal(healed[2].mom2_sum, first[2].mom2_sum) and store.has(model, tok, **request)


@pytest.mark.parametrize("what", ["statistics", "projector"])
def test_two_callers_that_need_the_same_missing_entries_compute_them_once(tmp_path, monkeypatch, what):
    """The second caller waits on the first one's entry locks (flock conflicts between two
    open files even in one process), then reads what the first one wrote."""
    import threading

    import editprobe.editing.lte.stats_store as stats_store

    model, tok, adapter = loaded = tiny_model("llama")
    spied = "accumulate_second_moment" if what == "statistics" else "nullspace_projector"
    real, calls = getattr(stats_store, spied), []
    computing, waiting = threading.Event(), threading.Event()

    def spy(*args, **kwargs):
        calls.append(threading.current_thread().name)
        computing.set()
        waiting.wait(10)  # the other caller is blocked on a lock by now
        return real(*args, **kwargs)

    monkeypatch.setattr(stats_store, spied, spy)
    monkeypatch.setattr(stats_store, "wait_note", lambda what: lambda holder: waiting.set())
    store, results = CovarianceStore(tmp_path, progress=False), {}

    def work():
        if what == "statistics":
            got = _get(store, loaded, corpus(10))
            results[threading.current_thread().name] = {l: s.mom2_sum for l, s in got.items()}
        else:
            got = store.projector(model, tok, adapter, [1, 2], lambda: iter(corpus(10)), "toy", n_docs=8, max_len=64)
            results[threading.current_thread().name] = {l: P for l, (P, _) in got.items()}

    first = threading.Thread(target=work, name="first")
    first.start()
    assert computing.wait(30)
    second = threading.Thread(target=work, name="second")
    second.start()
    first.join(60)
    second.join(60)
    assert waiting.is_set(), "the second caller did not wait for the first one's lock"
    assert calls == (["first"] if what == "statistics" else ["first", "first"])  # one pass; one P per layer
    assert all(torch.equal(results["first"][l], results["second"][l]) for l in (1, 2))
    assert not list(tmp_path.rglob(".*")), "a lock file was left behind"
