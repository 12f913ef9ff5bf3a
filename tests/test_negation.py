"""negate(): hand-written expected negations of real templates, table coverage of the shared
datasets, user tables, unnegatable templates and bad tables (docs/protocol.md#negating-a-template)."""

from __future__ import annotations

import json
from collections import defaultdict
from functools import lru_cache
from pathlib import Path

import pytest

from editprobe.data.negation import (
    NegationTable,
    NegationTableError,
    builtin_relation_table,
    load_negation_table,
    load_relation_table,
    negate,
    negate_all,
)
from editprobe.data.negation_rules import negate_by_rules

def _load(data: Path, rel: str) -> list[dict]:
    return json.loads((data / rel).read_text(encoding="utf-8"))


def _with_placeholder(text: str, subject: str) -> str | None:
    return text.replace(subject, "{}") if text.count(subject) == 1 else None


def _distinct(pairs) -> set[str]:
    return {t for t in (_with_placeholder(text, subj) for text, subj in pairs) if t is not None}


@lru_cache(maxsize=1)  # the JSON files are read once per session, not once per test
def dataset_templates(data: Path) -> dict[str, set[str]]:
    """Distinct templates of each shared dataset (the subject replaced by "{}")."""
    cf = _load(data, "counterfact/counterfact_filtered.json") + _load(data, "counterfact/cf_preview.json")
    mq = _load(data, "mquake/MQuAKE-hard.json")
    rewrites = [rr for case in mq for rr in case["requested_rewrite"]]
    return {
        "counterfact": {r["requested_rewrite"]["prompt"] for r in cf},
        "counterfact-edit": _distinct((r["prompt"], r["subject"]) for r in _load(data, "counterfact/counterfact-edit.json")),
        "zsre": _distinct((r["src"], r["subject"]) for r in _load(data, "zsre/zsre_mend_edit.json")),
        "zsre-test": _distinct((r["prompt"], r["subject"]) for r in _load(data, "zsre/ZsRE-test-all.json")),
        "wcf": _distinct((r["prompt"], r["subject"]) for r in _load(data, "wiki_counterfact/test_cf.json")),
        "wcf-train": _distinct((r["prompt"], r["subject"]) for r in _load(data, "wiki_counterfact/train_cf.json")),
        "mquake-prompts": {rr["prompt"] for rr in rewrites},
        "mquake-questions": _distinct((rr["question"], rr["subject"]) for rr in rewrites),
    }


@pytest.fixture
def templates(shared_data: Path) -> dict[str, set[str]]:
    return dataset_templates(shared_data)


# (dataset, template, expected negation), every expectation written out by hand.
CASES = [
    ("counterfact", "The mother tongue of {} is", "The mother tongue of {} is not"),
    ("counterfact", "{} was born in", "{} was not born in"),
    ("counterfact", "{} plays", "{} does not play"),
    ("counterfact", "{} works in the field of", "{} does not work in the field of"),
    ("counterfact", "{}, that was developed in", "{}, that was not developed in"),
    ("counterfact", "{} is a citizen of", "{} is not a citizen of"),
    ("counterfact", "{}, who has a citizenship from", "{}, who does not have a citizenship from"),
    ("counterfact", "{} has the position of", "{} does not have the position of"),
    ("counterfact", "{}'s life ended in", "{}'s life did not end in"),
    ("counterfact", "In {}, they understand", "In {}, they do not understand"),
    ("counterfact", "The official language of {} is", "The official language of {} is not"),
    ("counterfact", "What is the twin city of {}? It is", "What is the twin city of {}? It is not"),
    ("counterfact", "What sport does {} play? They play", "What sport does {} play? They do not play"),
    ("counterfact", "{} can be found in", "{} can not be found in"),
    ("counterfact", "{} took up work in", "{} did not take up work in"),
    ("counterfact", "{} premiered on", "{} did not premiere on"),
    ("counterfact", "{}, which has the capital city", "{}, which does not have the capital city"),
    ("counterfact", "{}'s headquarters are in", "{}'s headquarters are not in"),
    ("counterfact", "{} is to debut on", "{} is not to debut on"),
    ("counterfact", "{}, developed by", "{}, not developed by"),
    ("counterfact", "{} used to work in", "{} did not use to work in"),
    ("counterfact-edit", "{} professionally plays the sport", "{} does not professionally play the sport"),
    ("counterfact-edit", "{} found employment in", "{} did not find employment in"),
    ("counterfact-edit", "The law in {} declares the language", "The law in {} does not declare the language"),
    ("counterfact-edit", "{} is affiliated with the religion", "{} is not affiliated with the religion"),
    ("zsre", "Which family does {} belong to?", "Which family does {} not belong to?"),
    ("zsre", "What is the native tongue of {}?", "What is not the native tongue of {}?"),
    ("zsre", "When was the inception of {}?", "When was not the inception of {}?"),
    ("zsre", "Who designed {}?", "Who did not design {}?"),
    ("zsre", "Who sang or played {}?", "Who did not sing or play {}?"),
    ("zsre", "When did {}'s death occur?", "When did {}'s death not occur?"),
    ("zsre", "On what moon or planet can {} be found?", "On what moon or planet can {} not be found?"),
    ("zsre", "What city is the band {} from?", "What city is the band {} not from?"),
    ("zsre", "Who is {}'s father?", "Who is not {}'s father?"),
    ("zsre", "Which species has the {} gene?", "Which species does not have the {} gene?"),
    ("zsre", "Who has acted in the comedy film {}?", "Who has not acted in the comedy film {}?"),
    ("zsre", "In which year {} ceased to exist?", "In which year {} did not cease to exist?"),
    ("zsre", "The director of {} is who?", "The director of {} is not who?"),
    ("zsre", "What sports team was {} a member of?", "What sports team was {} not a member of?"),
    ("zsre", "With which fictional universe is the character {} associated?",
     "With which fictional universe is the character {} not associated?"),
    ("zsre", "In what fictional work would you find a character named {}?",
     "In what fictional work would you not find a character named {}?"),
    ("zsre", "On what channel did {} first air?", "On what channel did {} not first air?"),
    ("zsre", "Is {} a male or female?", "Is {} not a male or female?"),
    ("zsre", "What is the year {} discovered?", "What is not the year {} discovered?"),
    ("zsre", "The show {} originally aired on what network?", "The show {} did not originally air on what network?"),
    ("zsre", "What  is {}'s position on the field while playing football?",
     "What  is not {}'s position on the field while playing football?"),
    ("zsre-test", "What is {}named after?", "What is {} not named after?"),
    ("wcf", "The name of the award {} won is", "The name of the award {} won is not"),
    ("wcf", "The name of the league which {} plays in is", "The name of the league which {} plays in is not"),
    ("wcf", "{} follows", "{} does not follow"),
    ("wcf", "The names of the siblings of {} are", "The names of the siblings of {} are not"),
    ("wcf", "The name of the continent which {} is part of is", "The name of the continent which {} is part of is not"),
    ("mquake-prompts", "The type of music that {} plays is", "The type of music that {} plays is not"),
    ("mquake-prompts", "The univeristy where {} was educated is", "The univeristy where {} was educated is not"),
    ("mquake-prompts", "{} is affiliated with the religion of", "{} is not affiliated with the religion of"),
    ("mquake-questions", "Which city is the headquarter of {} located in?",
     "Which city is the headquarter of {} not located in?"),
    ("mquake-questions", "Who founded {}?", "Who did not found {}?"),
    ("mquake-questions", "What kind of work does {} do?", "What kind of work does {} not do?"),
    ("mquake-questions", "Who is {} married to?", "Who is {} not married to?"),
    ("mquake-questions", "What is {} famous for?", "What is {} not famous for?"),
]

# Verbless fragments the rules refuse; only the curated table negates them.
FRAGMENTS = {
    "{}, in": "{}, not in",
    "{}, a native": "{}, not a native",
    "{} owner": "{} owner is not",
    "{}'s owner": "{}'s owner is not",
    "{}'s capital,": "{}'s capital, not",
    "{}'s capital city,": "{}'s capital city, not",
    "{}, the": "{}, not the",
    "{}, of": "{}, not of",
    "{}, by": "{}, not by",
    "{}, from": "{}, not from",
    "{} from": "{} not from",
    "{}, a citizen of": "{}, not a citizen of",
    "{}, a product of": "{}, not a product of",
    "{}, a product created by": "{}, not a product created by",
    "{}, a product developed by": "{}, not a product developed by",
    "{}, a product manufactured by": "{}, not a product manufactured by",
    "{} label :": "{} label is not",
    "{}, speaker of": "{}, not a speaker of",
}


def test_cases_are_real_templates(templates):
    assert len(CASES) >= 40
    missing = [(ds, t) for ds, t, _ in CASES if t not in templates[ds]]
    assert not missing


@pytest.mark.parametrize("dataset,template,expected", CASES)
def test_negate_real_templates(dataset, template, expected):
    neg = negate(template)
    assert neg.ok and neg.negated == expected, neg
    # The grammar rules alone give the same answer (the table only adds fragments).
    assert negate_by_rules(template).negated == expected


@pytest.mark.parametrize("template,expected", sorted(FRAGMENTS.items()))
def test_fragments_come_from_the_table_only(template, expected):
    assert not negate_by_rules(template).ok
    neg = negate(template)
    assert (neg.negated, neg.rule_family) == (expected, "relation-table")


def test_protocol_examples():
    assert negate("{}, that was developed by").negated == "{}, that was not developed by"
    assert negate("What is the native language of {}?").negated == "What is not the native language of {}?"
    assert negate("{} plays").rule == "relation-table:P641"
    assert negate_by_rules("{} plays").rule == "do-support:plays->does not play"
    assert negate("{} played the").rule == "do-support:played->did not play"
    assert negate("Which family does {} belong to?").rule == "question-aux:does"
    assert negate("The mother tongue of {} is", "P103").rule == "relation-table:P103"
    assert negate("{} has won").negated == "{} has not won"  # auxiliary "has" before a participle
    assert negate("{} did the design of").negated == "{} did not do the design of"  # lexical "do"
    assert negate("Q: What is the capital of {}? A:").negated == "Q: What is not the capital of {}? A:"


def test_negating_twice_is_refused(templates):
    """A negated template is recognised as negated: the rules never produce "not not"."""
    for dataset, tpls in templates.items():
        for template in tpls:
            neg = negate(template)
            if neg.ok:
                again = negate_by_rules(neg.negated)
                assert not again.ok and "already negated" in again.reason, (dataset, template, again)


def _cf_relation_templates(data: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for r in _load(data, "counterfact/counterfact_filtered.json") + _load(data, "counterfact/cf_preview.json"):
        out[r["requested_rewrite"]["relation_id"]].add(r["requested_rewrite"]["prompt"])
    for case in _load(data, "mquake/MQuAKE-hard.json"):
        for rr in case["requested_rewrite"]:
            out[rr["relation_id"]].add(rr["prompt"])
    return out


def test_every_relation_and_its_templates_are_in_the_table(shared_data):
    table = builtin_relation_table().relations
    by_relation = _cf_relation_templates(shared_data)
    assert len(by_relation) == 46
    assert set(by_relation) <= set(table)
    for rid, tpls in by_relation.items():
        assert tpls <= set(table[rid].templates), rid
        for t in tpls:
            assert negate(t, rid).rule == f"relation-table:{rid}"


def test_every_counterfact_template_is_negated(templates):
    for ds in ("counterfact", "counterfact-edit", "mquake-prompts", "mquake-questions"):
        report = negate_all(templates[ds])
        assert report.failures == (), ds
        assert report.family_counts == {"relation-table": len(templates[ds])}


def test_table_is_consistent_with_itself_and_the_rules():
    seen: dict[str, str] = {}
    disagreements = {}
    for rid, entry in builtin_relation_table().relations.items():
        for template, negated in entry.templates.items():
            assert seen.setdefault(template, negated) == negated, (rid, template)
            assert " not" in f" {negated}", (rid, template)
            if negate_by_rules(template).negated != negated:
                disagreements[template] = negated
    assert disagreements == FRAGMENTS


# dataset: (distinct templates, negated by negate(), negated by the rules alone), measured.
COVERAGE = {
    "counterfact": (132, 132, 116),
    "counterfact-edit": (213, 213, 195),
    "zsre": (512, 507, 507),
    "zsre-test": (485, 482, 482),
    "wcf": (35, 35, 35),
    "wcf-train": (29, 29, 29),
    "mquake-prompts": (30, 30, 30),
    "mquake-questions": (30, 30, 30),
}


@pytest.mark.parametrize("dataset", sorted(COVERAGE))
def test_coverage(templates, dataset):
    n, with_tables, rules_only = COVERAGE[dataset]
    report = negate_all(templates[dataset])
    assert report.total == n
    assert report.n_ok >= with_tables
    assert sum(negate_by_rules(t).ok for t in templates[dataset]) >= rules_only
    for failure in report.failures:  # reported, never silently kept positive
        assert failure.negated is None and failure.rule == "unnegatable" and failure.reason


def test_unnegatable_is_reported():
    neg = negate("The date of {}?")
    assert (neg.ok, neg.negated, neg.rule) == (False, None, "unnegatable")
    assert not negate("{} is not located in").ok  # already negated: never "not not"
    report = negate_all(["The date of {}?", "{} was born in", "{} was born in", ("{} plays", "P1303")])
    assert report.total == 3 and report.n_ok == 2
    assert [f.template for f in report.failures] == ["The date of {}?"]
    assert report.counts == {"unnegatable": 1, "relation-table:P19": 1, "relation-table:P1303": 1}
    assert "unnegatable: 1" in report.summary() and "The date of {}?" in report.summary()
    assert report.mapping() == {"{} was born in": "{} was not born in", "{} plays": "{} does not play"}


def test_user_table_overrides_everything(tmp_path):
    path = tmp_path / "neg.yaml"
    path.write_text('"{} was born in": "{} was never born in"\n"The date of {}?": "The date of {} is not"\n')
    table = load_negation_table(path)
    assert negate("{} was born in", "P19", overrides=table).negated == "{} was never born in"
    assert negate("{}  was born in", overrides=table).rule == "user-table"  # whitespace-insensitive
    assert negate("The date of {}?", overrides=table).ok
    assert negate("{} plays", overrides=table).rule == "relation-table:P641"
    assert load_negation_table(_empty(tmp_path)).entries == {}


def _empty(tmp_path: Path) -> Path:
    path = tmp_path / "empty.yaml"
    path.write_text("")
    return path


@pytest.mark.parametrize(
    "text,needle",
    [
        ('"{} is": "{} is not"\n"{} was born in": "was not born in"\n', "'{} was born in'"),
        ('"{} is": "{} is"\n', "unchanged"),
        ('"{} is {}": "{} is not"\n', "exactly one"),
        ('"{} is": 3\n', "strings"),
        ("- just a list\n", "mapping"),
        ('"{} is": [unclosed\n', "not valid YAML"),
    ],
)
def test_bad_user_table(tmp_path, text, needle):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(NegationTableError) as err:
        load_negation_table(path)
    assert str(path) in str(err.value) and needle in str(err.value)


def test_bad_table_in_code():
    with pytest.raises(NegationTableError, match="'{} lives in'"):
        NegationTable.from_mapping({"{} lives in": "lives not in"})


def test_relation_patterns_and_bad_relation_table(tmp_path):
    good = tmp_path / "rel.yaml"
    good.write_text(
        "P17:\n  name: country\n  templates:\n    '{}, in': '{}, not in'\n"
        "  patterns:\n    - match: '(.*\\{\\}.*), located$'\n      replace: '\\1, not located'\n"
    )
    table = load_relation_table(good)
    assert negate("{} in Europe, located", "P17", relations=table).rule == "relation-pattern:P17"
    assert negate("{} in Europe, located", "P17", relations=table).negated == "{} in Europe, not located"
    assert negate("{}, in", relations=table).rule == "relation-table:P17"
    assert negate("{} plays", "P17", relations=table).rule.startswith("do-support")
    bad = tmp_path / "badrel.yaml"
    bad.write_text("P17:\n  templates:\n    '{}, in': '{}, in'\n")
    with pytest.raises(NegationTableError, match=r"badrel\.yaml.*P17: \{\}, in"):
        load_relation_table(bad)
    bad.write_text("P17:\n  patterns:\n    - match: '('\n      replace: x\n")
    with pytest.raises(NegationTableError, match="bad regex"):
        load_relation_table(bad)


def test_template_must_have_one_placeholder():
    with pytest.raises(ValueError):
        negate("The capital of France is")
    with pytest.raises(ValueError):
        negate("{} and {} are")
