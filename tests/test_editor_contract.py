"""The editor contract (editing/api.py): every registered method is a complete ``Editor``, the
registry refuses what is not, and each family states what it trains on, what it records, what
preflight must reach and whether it takes a target cache."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest
from pydantic import BaseModel

from editprobe.data import load_corpus
from editprobe.data.transform import IDENTITY, PromptTransform
from editprobe.editing import METHODS, lte_methods, make_editor, method_class, register_method
from editprobe.editing.api import Editor, EditReport, RemoteCheck, TrainedForm
from editprobe.editing.lte.covariance import CovarianceStore
from editprobe.editing.registry import PRESERVE_PREVIOUS, overrides_for, resolve_hparams
from editprobe.editing.rledit import Hypernetwork, RLEditEditor, RLEditSettings, edit_modules, module_shapes
from editprobe.editing.lte.target_cache import TargetCache, use_target_cache
from editprobe.errors import UserError
from editprobe.models.tiny import tiny_corpus
from editprobe.registry import RegistryError
from editprobe.runs.preflight import check_remote_requirements

SRC = Path(__file__).resolve().parents[1] / "src" / "editprobe"
LTE = ("memit", "pmet", "adaedit", "alphaedit", "emmet", "memit_lti", "namet", "prune", "rect", "rome")
P, PARA, NEG, PRE = TrainedForm.POSITIVE, TrainedForm.PARAPHRASE, TrainedForm.NEGATED, TrainedForm.PREFIXED


@pytest.fixture
def lm(tiny):
    return tiny("llama")


def _lte(lm, method="memit", tmp_path=None, **overrides):
    stats = CovarianceStore(root=tmp_path / "stats", progress=False) if tmp_path else None
    return make_editor(method, lm.model, lm.tokenizer, "tiny", overrides, stats=stats, corpus=tiny_corpus())


def _rledit(lm):
    settings = RLEditSettings(layers=[2, 3], rank=4, n_blocks=1)
    return RLEditEditor(lm.model, lm.tokenizer, Hypernetwork(settings, module_shapes(edit_modules(
        lm.model, lm.adapter, settings))))


# --- the registry -----------------------------------------------------------------------------

@pytest.mark.parametrize("method", list(METHODS))
def test_every_registered_method_is_a_complete_editor(method):
    cls = method_class(method)
    assert issubclass(cls, Editor) and not inspect.isabstract(cls)
    assert cls.name == method and issubclass(cls.hparams_cls, BaseModel)
    assert set(cls.edit_stages) <= {"positive", "negative"} and cls.edit_stages
    assert all(isinstance(form, TrainedForm) for form in cls.trains_on)
    if cls.uses_preserved_keys:  # the run's K_p switch reaches it through its settings
        assert PRESERVE_PREVIOUS in cls.hparams_cls.model_fields
    # The seeds a run's seed derives are seeds of its settings (docs/protocol.md#seeds).
    assert set(cls.seed_fields) <= set(cls.hparams_cls.model_fields)


def test_lte_methods_are_the_engine_s():
    assert sorted(lte_methods()) == sorted(LTE)
    assert not {"ft", "ike", "rledit", "wise", "grace"} & set(lte_methods())


class _Settings(BaseModel):
    def check_model(self, n_layers: int) -> None:
        pass


def _complete(**attrs):
    def apply(self, requests):
        return EditReport(method=self.name, batch=0, n_requests=0, requests=[], layers=[], timings={})

    body = dict(apply=apply, restore=lambda self: None, save_state=lambda self, d, include_stats=True: Path(d),
                load_state=lambda self, d: None)
    return type("Complete", (Editor,), {**body, **attrs})


@pytest.mark.parametrize("make,message", [
    (lambda: type("Plain", (), {"name": "plain", "hparams_cls": _Settings}),
     "method Plain: not a subclass of editprobe.editing.api.Editor"),
    (lambda: _complete(hparams_cls=_Settings), "method Complete: does not set name"),
    (lambda: _complete(name="nohp"), "method Complete: does not set hparams_cls"),
    (lambda: type("Half", (Editor,), {"name": "half", "hparams_cls": _Settings}),
     "method Half: does not implement apply, load_state, restore, save_state"),
], ids=["not-an-editor", "no-name", "no-hparams", "abstract"])
def test_the_method_registry_refuses_what_breaks_the_contract_in_one_line(make, message):
    before = list(METHODS)
    with pytest.raises(RegistryError) as info:
        register_method(make())
    assert str(info.value) == message and isinstance(info.value, UserError)
    assert list(METHODS) == before


def test_a_complete_editor_registers_and_make_editor_builds_it(lm):
    cls = _complete(name="contract-test", hparams_cls=_Settings,
                    __init__=lambda self, model, tok, hp, **kw: setattr(self, "hp", hp))
    try:
        assert register_method(cls) is cls and method_class("contract-test") is cls
        editor = make_editor("contract-test", lm.model, lm.tokenizer, {})
        assert isinstance(editor, Editor) and editor.prompt_transform() is IDENTITY
        assert editor.trained_forms() == {P} and editor.deltas == {} and editor.remote_requirements() == []
        assert editor.provenance() == {"hparams": {}, "variant": None, "c0": None}
    finally:
        METHODS.pop("contract-test")


# --- what each family states -------------------------------------------------------------------

def test_lte_trains_on_the_prompt_and_its_prefixes_and_with_defend_the_negated_form(lm):
    assert _lte(lm).trained_forms() == {P, PRE}
    assert _lte(lm, "rome").trained_forms() == {P, PRE}
    assert _lte(lm, negation="defend").trained_forms() == {P, PRE, NEG}
    assert _lte(lm, template_groups=[]).trained_forms() == {P}


def test_ft_trains_on_its_rows(lm):
    assert make_editor("ft", lm.model, lm.tokenizer, "tiny").trained_forms() == {P, PRE, NEG}
    bare = make_editor("ft", lm.model, lm.tokenizer, {"n_context": 0, "augment_negation": False})
    assert bare.trained_forms() == {P}


def test_wise_trains_on_the_prompt_and_its_prefixes_and_keeps_its_edit_out_of_the_weights(lm):
    wise = make_editor("wise", lm.model, lm.tokenizer, "tiny")
    assert wise.trained_forms() == {P, PRE} and not wise.edit_in_weights
    assert make_editor("wise", lm.model, lm.tokenizer, {"context_templates": []}).trained_forms() == {P}
    assert {"ike", "wise"} <= {m for m in METHODS if not method_class(m).edit_in_weights}


def test_only_editors_that_train_on_other_data_check_the_records():
    # the default refuses nothing; WISE's irrelevant prompts are its own (tests/test_wise.py)
    assert all(method_class(m).check_records(resolve_hparams(m, {}), []) is None for m in ("ft", "ike", "rledit"))


def test_ike_trains_nothing_and_rledit_its_prompt_and_paraphrases(lm):
    assert make_editor("ike", lm.model, lm.tokenizer, {"n_demos": 0}).trained_forms() == frozenset()
    assert _rledit(lm).trained_forms() == {P, PARA} == RLEditEditor.trains_on


def test_grace_trains_on_the_edit_prompt_alone_and_its_edit_is_not_in_the_weights(lm):
    grace = make_editor("grace", lm.model, lm.tokenizer, "tiny")
    assert grace.trained_forms() == {P} and not grace.edit_in_weights
    assert grace.deltas == {} and grace.prompt_transform() is IDENTITY


def _editors(lm, tmp_path):
    yield _lte(lm, tmp_path=tmp_path)
    yield _lte(lm, "rome", tmp_path=tmp_path, mom2_adjustment=False)  # needs_covariance from its settings
    yield make_editor("ft", lm.model, lm.tokenizer, "tiny")
    yield make_editor("ike", lm.model, lm.tokenizer, {"n_demos": 0})
    yield _rledit(lm)
    yield make_editor("wise", lm.model, lm.tokenizer, "tiny")
    yield make_editor("grace", lm.model, lm.tokenizer, "tiny")


def test_provenance_is_what_runs_recorded_before_the_contract(lm, tmp_path):
    for editor in _editors(lm, tmp_path):
        # the block runs/loop.py and jobs/edit.py each wrote out before issue #25
        before = {"hparams": editor.hp.model_dump(mode="json"), "variant": editor.variant(),
                  "c0": editor.c0_info() if editor.needs_covariance else None}
        assert list(editor.provenance()) == ["hparams", "variant", "c0"]
        assert editor.provenance() == before, editor.name
        assert isinstance(editor.prompt_transform(), PromptTransform)
    memit = _lte(lm, tmp_path=tmp_path)
    assert memit.provenance()["c0"]["corpus"] == tiny_corpus().name


def test_the_non_lte_editors_take_no_preserve_previous_and_runs_hand_it_to_those_that_do():
    for method in ("ft", "ike", "rledit", "wise", "grace"):
        assert PRESERVE_PREVIOUS not in method_class(method).hparams_cls.model_fields
        assert overrides_for(method, {PRESERVE_PREVIOUS: True, "x": 1}) == {"x": 1}
        with pytest.raises(UserError, match="preserve_previous"):
            resolve_hparams(method, {}, {PRESERVE_PREVIOUS: True})
    assert overrides_for("rome", {PRESERVE_PREVIOUS: True}) == {PRESERVE_PREVIOUS: True}


def test_only_the_lte_editors_take_a_target_cache(lm, tmp_path):
    memit = _lte(lm)
    cache = use_target_cache(memit, root=tmp_path / "targets")
    assert isinstance(cache, TargetCache) and memit.target_cache is cache
    assert use_target_cache(memit, enabled=False) is None
    for editor in (make_editor("ft", lm.model, lm.tokenizer, "tiny"),
                   make_editor("ike", lm.model, lm.tokenizer, {"n_demos": 0}), _rledit(lm),
                   make_editor("wise", lm.model, lm.tokenizer, "tiny"),
                   make_editor("grace", lm.model, lm.tokenizer, "tiny")):
        assert not editor.attach_target_cache(TargetCache(tmp_path)) and use_target_cache(editor) is None


def test_a_remote_c0_corpus_not_cached_is_what_preflight_must_reach(lm, tmp_path, monkeypatch):
    from editprobe.data.corpus import CorpusUnavailableError

    local = _lte(lm, tmp_path=tmp_path)
    assert local.remote_requirements() == [] and check_remote_requirements(local.remote_requirements()) is None
    remote = make_editor("memit", lm.model, lm.tokenizer, "tiny", {"mom2_corpus": "wikipedia"},
                         stats=CovarianceStore(root=tmp_path / "stats", progress=False))
    (requirement,) = remote.remote_requirements()
    assert isinstance(requirement, RemoteCheck) and requirement.what == "C0 corpus wikipedia"
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(CorpusUnavailableError, match="^C0 corpus wikipedia: HF_HUB_OFFLINE"):
        check_remote_requirements(remote.remote_requirements())
    # the same, asked of the class and the settings alone (a run asks before building editors)
    (asked,) = type(remote).requirements(remote.hp, lm.model, lm.tokenizer, model_id=remote.model_id)
    assert asked.what == "C0 corpus wikipedia"
    no_c0 = make_editor("adaedit", lm.model, lm.tokenizer, "tiny", {"mom2_corpus": "wikipedia",
                                                                     "use_covariance": False, "L2": 10.0})
    assert not no_c0.needs_covariance and no_c0.remote_requirements() == []
    assert type(no_c0).requirements(no_c0.hp, lm.model, lm.tokenizer, model_id="tiny") == []
    assert not load_corpus("wikitext-sample").remote


# --- how the code reaches an editor -------------------------------------------------------------

def test_nothing_reaches_an_editor_by_getattr_or_a_private_outside_editing():
    duck = re.compile(r"\b(?:getattr|hasattr)\((?:editor|method_class\()")
    private = re.compile(r"\beditor\._[a-z]")
    found = []
    for path in SRC.rglob("*.py"):
        text = path.read_text()
        found += [f"{path.relative_to(SRC)}: {m[0]}" for m in duck.finditer(text)]
        if path.relative_to(SRC).parts[0] != "editing":
            found += [f"{path.relative_to(SRC)}: {m[0]}" for m in private.finditer(text)]
    assert not found
