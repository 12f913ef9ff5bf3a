"""Every shared dataset loads with its SOURCES.md count and format; field mapping on real
records; built-in sample data and corpora."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from editprobe.data.options import DatasetOptions
from editprobe.data import (
    BUILTIN_DATASETS,
    DATASET_FORMATS,
    DataError,
    DatasetFormat,
    EditRecord,
    build_counterfact_sample,
    build_wikitext_sample,
    detokenize_wikitext,
    load_corpus,
    load_records,
    register_format,
    resolve_data,
)
from editprobe.data.builtin_data import BUILTIN_DIR

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
needs_shared = pytest.mark.skipif(not SHARED.is_dir(), reason=f"shared data folder {SHARED} is absent")

# (file, format, entries in file (SOURCES.md), records): MQuAKE has 4 rewrites per case.
SHARED_FILES = [
    ("counterfact/counterfact_filtered.json", "counterfact", 1400, 1400),
    ("counterfact/cf_preview.json", "counterfact", 7, 7),
    ("counterfact/counterfact-edit.json", "easyedit", 10000, 10000),
    ("zsre/zsre_mend_edit.json", "zsre", 1037, 1037),
    ("zsre/ZsRE-test-all.json", "knowedit", 1301, 1301),
    ("mquake/MQuAKE-hard.json", "mquake", 429, 1716),
    ("wiki_counterfact/test_cf.json", "knowedit", 839, 839),
    ("wiki_counterfact/train_cf.json", "knowedit", 1427, 1427),
]


@pytest.fixture(scope="module")
def loaded() -> dict[str, object]:
    if not SHARED.is_dir():
        pytest.skip(f"shared data folder {SHARED} is absent")
    return {name: load_records(SHARED / name) for name, *_ in SHARED_FILES}


@needs_shared
@pytest.mark.parametrize(("name", "fmt", "n_total", "n_records"), SHARED_FILES)
def test_shared_file_loads_with_its_count(loaded, name, fmt, n_total, n_records):
    result = loaded[name]
    assert (result.format, result.n_total, len(result.records), result.skipped) == (fmt, n_total, n_records, [])
    assert all(r.source_format == fmt for r in result.records)
    assert len({r.id for r in result.records}) == n_records


@needs_shared
def test_counterfact_case_0(loaded):
    rec = loaded["counterfact/counterfact_filtered.json"].records[0]
    assert (rec.id, rec.subject, rec.template) == ("0", "Danielle Darrieux", "The mother tongue of {} is")
    assert (rec.target_new, rec.target_true, rec.relation_id) == ("English", "French", "P103")
    assert rec.query == "The mother tongue of Danielle Darrieux is"
    assert rec.paraphrase_prompts[1].endswith("Danielle Darrieux spoke the language")
    assert len(rec.neighborhood) == 10
    assert rec.neighborhood[0].prompt == "The mother tongue of Léon Blum is"
    assert {n.answers for n in rec.neighborhood} == {("French",)}  # neighbours share the true object
    assert rec.extra["pararel_idx"] == 2796 and len(rec.extra["attribute_prompts"]) == 10
    assert not rec.is_question and rec.case_id is None


@needs_shared
def test_zsre_question_becomes_a_template(loaded):
    rec = loaded["zsre/zsre_mend_edit.json"].records[0]
    assert rec.template == "When was the inception of {}?"
    assert rec.query == "When was the inception of IAAF Combined Events Challenge?"
    # By default zsRE edits toward answers[0] with no old object (MEMIT's, AlphaEdit's and the paper's way)
    assert (rec.target_new, rec.target_true, rec.is_question) == ("1998", None, True)
    assert rec.extra["alt"] == "2006" and rec.portability == ()  # EasyEdit's portability is about alt
    assert rec.paraphrase_prompts == ("When was the IAAF Combined Events Challenge launched?",)
    assert rec.neighborhood[0].answers == ("The String",) and rec.neighborhood[0].prompt.startswith("nq question:")
    assert rec.neighborhood[0].prompt.endswith("?")  # as the MEMIT and AlphaEdit loaders ask it
    alt = load_records(SHARED / "zsre/zsre_mend_edit.json", options=DatasetOptions(zsre_target="alt")).records[0]
    assert (alt.target_new, alt.target_true) == ("2006", "1998")  # EasyEdit's way
    assert alt.portability[0].answers == ("Athletics",) and alt.portability[0].kind == "one_hop"
    # surrounding whitespace of targets is normalised (15 records have e.g. "' species'")
    assert all(r.target_new == r.target_new.strip() for r in loaded["zsre/zsre_mend_edit.json"].records)


@needs_shared
def test_knowedit_zsre_record(loaded):
    records = loaded["zsre/ZsRE-test-all.json"].records
    rec = records[0]
    assert (rec.template, rec.target_new, rec.target_true) == ("Which family does {} belong to?", "Aspidoceratidae", None)
    assert rec.is_question and rec.paraphrase_prompts == ("What family are Epaspidoceras?",)
    assert [n.kind for n in rec.neighborhood] == ["Relation_Specificity"] * 2
    alt = load_records(SHARED / "zsre/ZsRE-test-all.json", limit=1, options=DatasetOptions(zsre_target="alt")).records[0]
    assert (alt.target_new, alt.target_true) == ("Noctuidae", "Aspidoceratidae")
    assert alt.portability[0].kind == "Reasoning" and alt.portability[0].answers == ("Owlet moths",)
    # a subject with a trailing space ("Angora goat ") is still found in its prompt
    angora = next(r for r in records if r.subject == "Angora goat")
    assert angora.template == "What is {} named after?"
    assert all(r.is_question for r in records)


@needs_shared
def test_knowedit_wcf_nested_ground_truths_are_flattened(loaded):
    rec = loaded["wiki_counterfact/test_cf.json"].records[0]
    assert rec.paraphrase_prompts == ("Leonardo DiCaprio's country of citizenship is known as",)
    currency = next(p for p in rec.portability if "currency" in p.prompt)
    assert currency.answers == ("Syrian pound", "SYP", "LS", "Syrian lira")
    assert {p.kind for p in rec.portability} >= {"Reasoning", "Subject_Aliasing"}
    assert not rec.is_question
    train = loaded["wiki_counterfact/train_cf.json"].records
    assert train[629].target_true is None  # its ground_truth is "" upstream: no old target
    assert train[629].template == "{} follows"


@needs_shared
def test_mquake_case_becomes_one_record_per_rewrite(loaded):
    records = loaded["mquake/MQuAKE-hard.json"].records
    case = [r for r in records if r.case_id == "7417"]
    assert [r.id for r in case] == ["7417_0", "7417_1", "7417_2", "7417_3"]
    assert (case[0].template, case[0].subject, case[0].target_new, case[0].target_true) == (
        "{} was performed by", "Hey Jude", "Madonna", "The Beatles")
    assert case[3].relation_id == "P37" and case[3].target_new == "Arabic"
    for rec in case:
        assert len(rec.portability) == 3 and {p.kind for p in rec.portability} == {"multi_hop"}
        assert rec.portability[0].answers[:2] == ("Arabic", "ar")
    assert case[0].extra["question"] == "Who performed Hey Jude?"


@needs_shared
def test_easyedit_flat_record(loaded):
    rec = loaded["counterfact/counterfact-edit.json"].records[0]
    assert (rec.id, rec.template, rec.target_new, rec.target_true) == ("0", "The mother tongue of {} is", "English", "French")
    assert rec.paraphrase_prompts == ("Where Danielle Darrieux is from, people speak the language of",)
    assert rec.neighborhood[0].prompt == "Michel Rocard is a native speaker of" and rec.neighborhood[0].answer == "French"


@needs_shared
def test_format_is_detected_from_content_not_file_name(tmp_path):
    raw = json.loads((SHARED / "counterfact/cf_preview.json").read_text())
    misleading = tmp_path / "zsre_mquake.jsonl.txt"
    misleading.write_text(json.dumps(raw))
    assert load_records(misleading).format == "counterfact"


def test_jsonl_loads_like_a_json_array(tmp_path):
    rows = [{"prompt": f"{s} plays", "subject": s, "target_new": "chess", "ground_truth": "golf"} for s in ("Ann", "Bob")]
    as_array, as_lines = tmp_path / "a.json", tmp_path / "a.jsonl"
    as_array.write_text(json.dumps(rows, indent=2))
    as_lines.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    a, b = load_records(as_array), load_records(as_lines)
    assert a.records == b.records and b.format == "easyedit" and b.records[1].template == "{} plays"


@needs_shared
def test_limit_counts_entries_and_never_splits_a_case():
    assert len(load_records(SHARED / "counterfact/counterfact_filtered.json", limit=5).records) == 5
    mquake = load_records(SHARED / "mquake/MQuAKE-hard.json", limit=2)
    assert len(mquake.records) == 8 and len({r.case_id for r in mquake.records}) == 2


def test_builtin_sample_loads_by_name():
    assert resolve_data("counterfact-sample") == BUILTIN_DATASETS["counterfact-sample"].path
    result = load_records("counterfact-sample")
    assert (result.format, len(result.records)) == ("counterfact", 300)
    assert result.records[0].subject == "Danielle Darrieux"


def test_an_existing_path_wins_over_a_builtin_name(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    Path("counterfact-sample").write_text(json.dumps([{"prompt": "{} is", "subject": "X", "target_new": "Y"}]))
    assert len(load_records("counterfact-sample").records) == 1


@needs_shared
def test_builtin_sample_is_the_first_300_counterfact_records(tmp_path):
    rebuilt = build_counterfact_sample(SHARED / "counterfact/counterfact_filtered.json", tmp_path / "s.json")
    assert rebuilt.read_bytes() == (BUILTIN_DIR / "counterfact_sample.json").read_bytes()
    source = json.loads((SHARED / "counterfact/counterfact_filtered.json").read_text())
    assert json.loads(rebuilt.read_text()) == source[:300]


def test_attribution_is_shipped():
    text = (BUILTIN_DIR / "ATTRIBUTION.md").read_text()
    assert "Vaidehi99/InfoDeletionAttacks @ 39a4c2f" in text and "MIT" in text
    assert "CC BY-SA 3.0" in text and "pytorch/examples @ 77f55b9" in text


@pytest.fixture
def restore_formats():
    saved = dict(DATASET_FORMATS)
    yield
    DATASET_FORMATS.unregister("mine")
    assert list(DATASET_FORMATS.items()) == list(saved.items())


def test_user_format_can_be_registered(tmp_path, restore_formats):
    def convert(entry, index):
        s = entry.text("who")
        return [EditRecord(id=str(index), subject=s, template="{} lives in", target_new=entry.text("city"), source_format="mine")]

    register_format(DatasetFormat("mine", "who/city pairs", lambda raw: "who" in raw, convert))
    assert list(DATASET_FORMATS)[0] == "mine"
    path = tmp_path / "people.json"
    path.write_text(json.dumps([{"who": "Ann", "city": "Rome"}]))
    result = load_records(path)
    assert result.format == "mine" and result.records[0].query == "Ann lives in"
    path.write_text(json.dumps([{"who": "Ann"}]))
    with pytest.raises(DataError, match=r"record 0: field 'city': missing"):
        load_records(path)


# --- corpora -----------------------------------------------------------------------


def test_builtin_corpus_is_detokenized():
    corpus = load_corpus(None)
    assert corpus.name == "wikitext-sample" and load_corpus("wikitext-sample").identity == corpus.identity
    assert re.fullmatch(r"[0-9a-f]{16}", corpus.identity)
    docs = list(corpus.texts())
    assert len(docs) > 3000 and all(d.strip() for d in docs)
    joined = "\n".join(docs)
    for token in (" @-@ ", "@,@", "@.@", "<unk>", " , ", " . "):
        assert token not in joined, token
    assert not any(d.startswith("= ") and d.endswith(" =") for d in docs)  # " = Heading = " lines
    assert "Homarus gammarus =" not in joined
    assert docs[0].startswith("Homarus gammarus, known as the European lobster")
    assert list(corpus.texts(3)) == docs[:3]


@needs_shared
def test_builtin_corpus_regenerates_from_shared_data(tmp_path):
    out = build_wikitext_sample(SHARED / "wikitext-2", tmp_path / "w.txt")
    assert out.read_bytes() == (BUILTIN_DIR / "wikitext2_sample.txt").read_bytes()


@pytest.mark.parametrize(
    ("tokenized", "plain"),
    [
        ("weigh 0 @.@ 7 – 2 @.@ 2 kg ( 1 @.@ 5 lb ) .", "weigh 0.7 – 2.2 kg (1.5 lb)."),
        ("red @-@ tipped , 1 @,@ 000 men ; it 's : yes ! no ?", "red-tipped, 1,000 men; it's: yes! no?"),
        ('becoming " lobster red " on cooking', 'becoming "lobster red" on cooking'),
        ("a hard <unk> which ( <unk> ) is the \" <unk> \" one", "a hard which is the one"),
        ("the anti @-@ <unk> concept , 16 @,@ <unk> cars", "the anti concept, 16 cars"),
        ("born in 1932 @,@", "born in 1932,"),
    ],
)
def test_detokenize_wikitext(tokenized, plain):
    assert detokenize_wikitext(tokenized) == plain


def test_text_and_jsonl_corpora(tmp_path):
    txt = tmp_path / "c.txt"
    txt.write_text("first doc\nsecond line\n\n\nsecond doc\n")
    corpus = load_corpus(str(txt))
    assert list(corpus.texts()) == ["first doc\nsecond line", "second doc"]
    before = corpus.identity
    txt.write_text("first doc\n\nchanged doc\n")
    assert load_corpus(txt).identity != before

    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text('{"text": "a b"}\n\n{"text": "  "}\n{"text": "c d", "id": 3}\n')
    assert list(load_corpus(jsonl).texts()) == ["a b", "c d"]
    assert list(load_corpus(jsonl).texts(1)) == ["a b"]
    jsonl.write_text('{"text": "a"}\n{"body": "b"}\n')
    with pytest.raises(DataError, match=r"c\.jsonl: record 1: field 'text': missing or not a string"):
        list(load_corpus(jsonl).texts())


def test_corpus_spec_errors(tmp_path, monkeypatch):
    with pytest.raises(DataError, match="no such file"):
        load_corpus(tmp_path / "nope.txt")
    (tmp_path / "c.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="expected .txt"):
        load_corpus(tmp_path / "c.csv")
    with pytest.raises(DataError, match="hf:NAME"):
        load_corpus("hf:")
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(DataError, match="pip install datasets"):
        load_corpus("hf:wikimedia/wikipedia:20231101.en")


def test_hf_corpus_spec_is_parsed_when_datasets_is_importable(monkeypatch):
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: object())
    corpus = load_corpus("hf:wikimedia/wikipedia:20231101.en")  # lazy: nothing is downloaded
    assert (corpus.dataset, corpus.config, corpus.split) == ("wikimedia/wikipedia", "20231101.en", "train")
    assert corpus.name == "hf:wikimedia/wikipedia:20231101.en:train"
    assert corpus.identity != load_corpus("hf:wikimedia/wikipedia:20220301.en").identity
