"""Fact-checking queries (docs/protocol.md#fact-checking): statements, the chat prompt, answer parsing, batched
generation equal to one prompt at a time, the inclusion rule, accuracy, the control."""

from __future__ import annotations

import pytest
import torch

from editprobe.data import EditRecord, load_records
from editprobe.models.tiny import offline_tokenizer, tiny_model
from editprobe.probes import (
    FactCheckConfig,
    FactCheckReply,
    ask_records,
    ask_statements,
    fact_check_prompt,
    fact_check_result,
    make_statement,
    no_edit_fact_check,
    parse_answer,
)
from editprobe.probes.factcheck import is_included

torch.set_num_threads(1)

RECORD = EditRecord(id="0", subject="Danielle Darrieux", template="The mother tongue of {} is",
                    target_new="English", target_true="French")
QUESTION = EditRecord(id="1", subject="Pablo Picasso", template="What is the native language of {}?",
                      target_new="German", target_true="Spanish", is_question=True)
STATEMENTS = [
    "The mother tongue of Danielle Darrieux is English",
    "Toko Yasuda plays guitar",
    "Apple was developed by Steve Jobs",
    "The capital of France is Paris",
    "Bob",
    'The answer to the question "Which family does the cat belong to?" is Felidae.',
    "Michael Jordan plays basketball in Toronto and in Sydney",
]


@pytest.fixture(scope="module")
def chat_llama():
    return tiny_model("llama", seed=2, tokenizer=offline_tokenizer("sentencepiece", chat_template=True))


# --- statements, prompt, parsing ----------------------------------------------------------


def test_statements_follow_the_protocol():
    assert make_statement(RECORD, "English") == "The mother tongue of Danielle Darrieux is English"
    assert make_statement(QUESTION, "German") == (
        'The answer to the question "What is the native language of Pablo Picasso?" is German.')
    cfg = FactCheckConfig(statement_template="{query} {target}.", question_statement_template="{question} {target}")
    assert make_statement(RECORD, "French", cfg) == "The mother tongue of Danielle Darrieux is French."
    assert make_statement(QUESTION, "Spanish", cfg) == "What is the native language of Pablo Picasso? Spanish"


@pytest.mark.parametrize("field,value", [("statement_template", "{query}"), ("instruction", "Judge this"),
                                         ("question_statement_template", "{target}"), ("max_new_tokens", 0)])
def test_config_rejects_templates_missing_their_fields(field, value):
    with pytest.raises(ValueError):
        FactCheckConfig(**{field: value})


def test_prompt_uses_the_chat_template_with_its_default_system_prompt():
    tok = offline_tokenizer("sentencepiece", chat_template=True)
    prompt = fact_check_prompt(tok, "The capital of France is Paris")
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\nJudge whether the following statement is true or false: The capital of France is Paris"
        " Answer with True or False only.<|im_end|>\n<|im_start|>assistant\n"
    )
    custom = fact_check_prompt(tok, "X", FactCheckConfig(system="Be brief.", suffix=""))
    assert custom.startswith("<|im_start|>system\nBe brief.<|im_end|>") and "false: X<|im_end|>" in custom
    # Without a chat template (a base model) the bare user message is the prompt.
    assert fact_check_prompt(offline_tokenizer("bpe"), "X") == (
        "Judge whether the following statement is true or false: X Answer with True or False only.")


@pytest.mark.parametrize("text,answer", [
    ("True", "true"), (" true.", "true"), ("FALSE", "false"), ("False. The mother", "false"),
    ("**True**", "true"), ("“False”", "false"), ("\nTrue,", "true"), ("", "other"), ("Answer: True", "other"),
    ("Trueish", "other"), ("True/False", "other"), ("I think true", "other"),
])
def test_answer_is_the_first_word(text, answer):
    assert parse_answer(text) == answer


# --- generation -------------------------------------------------------------------------


@pytest.mark.parametrize("model_type,style", [("llama", "sentencepiece"), ("gpt2", "bpe"), ("qwen2", "bpe")])
def test_batched_answers_equal_one_at_a_time(model_type, style):
    lm = tiny_model(model_type, seed=5, tokenizer=offline_tokenizer(style, chat_template=True))
    cfg = FactCheckConfig(max_new_tokens=6)
    batched = ask_statements(lm.model, lm.tokenizer, STATEMENTS, cfg.model_copy(update={"batch_size": 8}))
    single = [ask_statements(lm.model, lm.tokenizer, [s], cfg.model_copy(update={"batch_size": 1}))[0]
              for s in STATEMENTS]
    assert batched == single
    assert all(a == parse_answer(t) for t, a in batched)


def test_ask_records_builds_statements_and_skips_records_without_an_old_object(chat_llama):
    no_old = RECORD.model_copy(update={"id": "2", "target_true": None})
    records = [RECORD, QUESTION, no_old]
    new = ask_records(chat_llama.model, chat_llama.tokenizer, records, "new")
    old = ask_records(chat_llama.model, chat_llama.tokenizer, records, "old")
    assert [r.record_id for r in new] == ["0", "1", "2"] and [r.record_id for r in old] == ["0", "1"]
    assert old[0].statement == "The mother tongue of Danielle Darrieux is French"
    assert new[1].statement.endswith("is German.") and all(r.chat_template for r in new + old)
    no_edit = no_edit_fact_check(chat_llama.model, chat_llama.tokenizer, records)
    assert no_edit.n_skipped == 1 and no_edit.score.n == 2 and sum(no_edit.counts.values()) == 2
    assert [(r.generated, r.answer) for r in no_edit.replies] == [(r.generated, r.answer) for r in old]
    with pytest.raises(ValueError, match="'new' or 'old'"):
        ask_records(chat_llama.model, chat_llama.tokenizer, records, "both")  # type: ignore[arg-type]


# --- inclusion, accuracy, control ---------------------------------------------------------


def _replies(answers: list[str], target: str = "new") -> list[FactCheckReply]:
    return [FactCheckReply(record_id=str(i), target=target, statement=f"s{i}", generated=a.title(), answer=a)
            for i, a in enumerate(answers)]


def test_inclusion_rule():
    assert is_included("false", "true") and is_included("false", "false") and is_included("false", "other")
    assert is_included("true", "false") and is_included("true", "other")
    assert not is_included("true", "true")  # true both before and after: says nothing
    assert not is_included("other", "true") and not is_included("other", "false")


def test_accuracy_counts_only_included_records_and_reports_the_control():
    before = _replies(["false", "false", "false", "true", "true", "other", "false", "true"])
    after = _replies(["true", "false", "other", "true", "false", "true", "true", "true"])
    control = _replies(["true", "false", "false", "true", "true", "true", "false"], target="old")  # no record 7
    result = fact_check_result(before, after, eff=97.5, control=control)
    # Included: 0 1 2 4 6 (3 and 7 are true/true, 5 was 'other' before); 'true' after: 0, 6.
    assert [s.included for s in result.samples] == [True, True, True, False, True, False, True, False]
    assert result.n_included == 5 and result.accuracy == 40.0 and result.accuracy_score.hits == 2
    assert result.eff == 97.5 and result.row()["Eff"] == 97.5
    # Control over included records: old statement answered 'true' by 0 and 4 -> 2/5.
    assert result.control == 40.0
    # Balanced: ('true' to o*: 0, 6) + ('false' to o: 1, 2, 6) over 2 * 5.
    assert result.balanced_accuracy == 50.0
    assert result.before_counts == {"false": 4, "true": 3, "other": 1} and result.n_records == 8
    dumped = result.model_dump()
    assert dumped["accuracy"] == 40.0 and dumped["n_included"] == 5 and len(dumped["samples"]) == 8


def test_a_model_that_says_true_to_everything_does_not_look_good():
    before = _replies(["false"] * 4)
    result = fact_check_result(before, _replies(["true"] * 4), control=_replies(["true"] * 4, target="old"))
    assert result.accuracy == 100.0 and result.control == 100.0 and result.balanced_accuracy == 50.0


def test_result_rejects_mismatched_replies():
    with pytest.raises(ValueError, match="same records"):
        fact_check_result(_replies(["true", "false"]), _replies(["true"]))
    with pytest.raises(ValueError, match="target='new'"):
        fact_check_result(_replies(["true"], "old"), _replies(["true"]))
    with pytest.raises(ValueError, match="old-object"):
        fact_check_result(_replies(["true"]), _replies(["true"]), control=_replies(["true"]))
    with pytest.raises(ValueError, match="twice"):
        fact_check_result(_replies(["true"]) * 2, _replies(["true"]))


# --- SmolLM2 ------------------------------------------------------------------------------


@pytest.mark.integration
def test_smollm2_batched_answers_equal_one_at_a_time(smollm2):
    model, tok = smollm2.model, smollm2.tokenizer
    records = load_records("counterfact-sample", limit=6).records
    statements = [make_statement(r, t) for r in records for t in (r.target_true, r.target_new)]
    batched = ask_statements(model, tok, statements, FactCheckConfig(batch_size=12))
    single = [ask_statements(model, tok, [s], FactCheckConfig(batch_size=1))[0] for s in statements]
    assert batched == single
    # The prompt reaches the model as intended: it answers in the asked form.
    assert sum(a in ("true", "false") for _, a in batched) >= 0.8 * len(batched)


@pytest.mark.integration
def test_smollm2_no_edit_rows(smollm2):
    model, tok = smollm2.model, smollm2.tokenizer
    records = load_records("counterfact-sample", limit=16).records
    no_edit = no_edit_fact_check(model, tok, records)
    assert no_edit.score.n == 16 and no_edit.chat_template
    assert no_edit.score.hits == no_edit.counts.get("true", 0)
    # Without an edit, "after" equals "before": every included record answered 'false' both
    # times (true/true ones are excluded), so the accuracy must be exactly 0.
    before = ask_records(model, tok, records, "new")
    result = fact_check_result(before, before, eff=0.0)
    assert result.n_included == sum(r.answer == "false" for r in before) > 0
    assert result.accuracy == 0.0
