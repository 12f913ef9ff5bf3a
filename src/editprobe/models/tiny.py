"""Tiny random models and offline tokenizers, for tests and for trying the pipeline
without any download. Built from configs; nothing is fetched.
"""

from __future__ import annotations

import torch

from .adapters import get_adapter
from .loading import LoadedModel, prepare_tokenizer

# A small English corpus for training tokenizers offline: subjects, relations and targets
# in the style of CounterFact, so the test vocabulary covers what the tests say.
_WORDS = """
The mother tongue of Danielle Darrieux is French . The capital of France is Paris .
Danielle Darrieux was born in Paris . Michael Jordan plays basketball . Toko Yasuda plays guitar .
The official language of Italy is Italian . Apple was developed by Steve Jobs . Which family does the
cat belong to ? What is the native language of Pablo Picasso ? English German Spanish Russian Japanese
London Berlin Rome Tokyo Madrid Moscow Toronto Sydney football soccer hockey piano violin
Microsoft Google Nokia Sony Toyota physics chemistry biology mathematics philosophy history
is was are were has have had does do did not a an the of in on at by for to from with and
works in the field of located in citizen of plays the position of speaks native language
birthplace sport played work
Apple , that was developed by Steve Jobs , is Toyota's Sony's Google's ( a ) - : ; ! " 1 2 3 2003
Alice Bob Carol Dave Erin Frank Grace Heidi Ivan Judy Oscar Peggy Trent Victor Walter Wendy
""".split()


def _training_text() -> list[str]:
    import random

    rng = random.Random(0)
    lines = [" ".join(_WORDS[i : i + 12]) for i in range(0, len(_WORDS), 6)]
    for _ in range(400):
        lines.append(" ".join(rng.choice(_WORDS) for _ in range(12)))
    return lines


CHATML_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n' }}{% endif %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def offline_tokenizer(style: str = "bpe", chat_template: bool = False, vocab_size: int = 600):
    """A fast tokenizer trained offline on a tiny corpus.

    ``style="bpe"``: byte-level BPE like GPT-2 (leading-space tokens, no BOS).
    ``style="sentencepiece"``: Llama-style metaspace BPE that prepends ``<s>`` (BOS).
    ``chat_template=True`` adds a ChatML template with ``<|im_start|>``/``<|im_end|>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    specials = ["<unk>", "<s>", "</s>", "<pad>"] + (["<|im_start|>", "<|im_end|>"] if chat_template else [])
    if style == "bpe":
        tk = Tokenizer(models.BPE())
        tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tk.decoder = decoders.ByteLevel()
        trainer = trainers.BpeTrainer(
            vocab_size=vocab_size, special_tokens=specials, show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
        )
        tk.train_from_iterator(_training_text(), trainer)
        tk.post_processor = processors.ByteLevel(trim_offsets=True)
        bos = None
    elif style == "sentencepiece":
        tk = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=False))
        tk.pre_tokenizer = pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="first")
        tk.decoder = decoders.Metaspace(replacement="▁", prepend_scheme="first")
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=specials, show_progress=False)
        tk.train_from_iterator(_training_text(), trainer)
        bos_id = tk.token_to_id("<s>")
        tk.post_processor = processors.TemplateProcessing(
            single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", bos_id)]
        )
        bos = "<s>"
    else:
        raise ValueError(f"unknown tokenizer style {style!r}; use 'bpe' or 'sentencepiece'")
    tok = PreTrainedTokenizerFast(
        tokenizer_object=tk,
        unk_token="<unk>",
        bos_token=bos,
        eos_token="<|im_end|>" if chat_template else "</s>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>"] if chat_template else None,
    )
    if chat_template:
        tok.chat_template = CHATML_TEMPLATE
    prepare_tokenizer(tok)
    return tok


# Sizes chosen so every test model runs in milliseconds on a CPU.
TINY = dict(hidden=64, layers=4, heads=4, kv_heads=2, d_ff=128, positions=256)


def tiny_config(model_type: str, vocab_size: int, **overrides):
    from transformers import AutoConfig

    h, n, heads, kv, ff, pos = (TINY[k] for k in ("hidden", "layers", "heads", "kv_heads", "d_ff", "positions"))
    n = overrides.pop("layers", n)
    if model_type == "gpt2":
        kw = dict(n_embd=h, n_layer=n, n_head=heads, n_inner=ff, n_positions=pos)
    elif model_type == "gptj":
        kw = dict(n_embd=h, n_layer=n, n_head=heads, n_inner=ff, n_positions=pos, rotary_dim=8, tie_word_embeddings=False)
    elif model_type == "gpt_neox":
        kw = dict(hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, intermediate_size=ff,
                  max_position_embeddings=pos, tie_word_embeddings=False)
    else:
        kw = dict(hidden_size=h, num_hidden_layers=n, num_attention_heads=heads, num_key_value_heads=kv,
                  intermediate_size=ff, max_position_embeddings=pos, head_dim=h // heads)
        if model_type.startswith("gemma"):
            kw["head_dim"] = h // heads
    kw.update(overrides)
    config = AutoConfig.for_model(model_type, vocab_size=vocab_size, **kw)
    if model_type in ("gemma2", "gemma3_text"):
        config.sliding_window = pos
    return config


def tiny_model(model_type: str = "llama", seed: int = 0, tokenizer=None, **config_overrides) -> LoadedModel:
    """A randomly initialised model of ``model_type`` with an offline tokenizer."""
    from transformers import AutoModelForCausalLM

    if tokenizer is None:
        tokenizer = offline_tokenizer("bpe" if model_type in ("gpt2", "gptj", "gpt_neox") else "sentencepiece")
    special = dict(pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
                   eos_token_id=tokenizer.eos_token_id)
    config = tiny_config(model_type, vocab_size=len(tokenizer), **special, **config_overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config)
    model.eval()
    model.requires_grad_(False)
    return LoadedModel(model, tokenizer, get_adapter(model), f"tiny-{model_type}-seed{seed}")


# --- a tiny model that has learned facts ------------------------------------------------------
# Random weights barely route information from the subject to the answer, so edits of a
# random model say nothing about a method. A few seconds of training on synthetic facts
# gives a model that recalls them the way real models do: through the subject's tokens.
# Single-token subjects: a 4-layer model does not learn to gather a multi-token subject into
# its last token, which is where locate-then-edit methods write.
FACT_SUBJECTS = (
    "Alice", "Bob", "Carol", "Dave", "Erin", "Frank", "Grace", "Heidi", "Ivan", "Judy", "Oscar", "Peggy",
    "Trent", "Victor", "Walter", "Wendy",
)
# Templates end with the subject, so the subject's last token is where the next token is
# predicted: a tiny model reads a subject through early attention rather than gathering it
# into the subject's last token the way real models do, so a write there would not reach
# the answer otherwise. Real-model integration tests cover the usual templates.
FACT_RELATIONS = {
    "language": ("The mother tongue of {}", ("French", "English", "German", "Spanish", "Russian", "Japanese", "Italian")),
    "place": ("The birthplace of {}", ("Paris", "London", "Berlin", "Rome", "Tokyo", "Madrid", "Moscow", "Toronto", "Sydney")),
    "field": ("The field of work of {}", ("physics", "chemistry", "biology", "mathematics", "philosophy", "history")),
    "plays": ("The sport played by {}", ("basketball", "football", "soccer", "hockey", "piano", "violin", "guitar")),
}


def tiny_facts(seed: int = 0) -> list[tuple[str, str, str]]:
    """(template, subject, object) for every subject × relation, objects drawn at random."""
    import random

    rng = random.Random(seed)
    return [(tmpl, s, rng.choice(objs)) for s in FACT_SUBJECTS for tmpl, objs in FACT_RELATIONS.values()]


def trained_tiny_model(model_type: str = "llama", seed: int = 0, steps: int = 150, lr: float = 3e-3, **config_overrides) -> LoadedModel:
    """A tiny model trained (seeded, CPU, seconds) to recall :func:`tiny_facts`."""
    from .tokens import encode, make_batch

    loaded = tiny_model(model_type, seed=seed, **config_overrides)
    model, tok = loaded.model, loaded.tokenizer
    texts = [t.format(s) + " " + o for t, s, o in tiny_facts(seed)]
    batch = make_batch(tok, [encode(tok, t) for t in texts], "right")
    labels = batch.input_ids.masked_fill(batch.attention_mask == 0, -100)
    model.requires_grad_(True)
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.1)
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        for _ in range(steps):
            loss = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, labels=labels).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.eval()
    model.requires_grad_(False)
    loaded.name = f"tiny-trained-{model_type}-seed{seed}"
    return loaded


def tiny_corpus(n_docs: int = 200, seed: int = 1):
    """General text for covariance statistics of tiny models: the tokenizer's words without
    the fact subjects, so (as with real corpora) edited keys are not what C0 preserves."""
    import hashlib
    import random

    from ..data.corpus import Corpus

    words = [w for w in _WORDS if w not in FACT_SUBJECTS]
    rng = random.Random(seed)
    docs = [" ".join(rng.choice(words) for _ in range(rng.randint(5, 40))) for _ in range(n_docs)]

    class _TinyCorpus(Corpus):
        name = "tiny-words"

        @property
        def identity(self) -> str:
            return hashlib.sha256("\n\n".join(docs).encode()).hexdigest()[:16]

        def _documents(self):
            return iter(docs)

    return _TinyCorpus()
