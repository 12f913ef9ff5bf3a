"""Rule-based negation of one prompt template (docs/protocol.md#negating-a-template).

The rules find the finite verb of the clause that carries the relation and either insert
"not" after it (auxiliary/copula) or rewrite it with do-support ("plays" -> "does not
play"). They work on the template itself, so the subject placeholder "{}" is never
touched. Anything the rules are unsure about is reported as unnegatable rather than guessed.

Choices (documented because a probe's wording changes its scores):
- "not" is always a separate word ("can not", never "cannot"/"can't"), so that p and
  neg(p) differ by the token " not" wherever possible.
- Lexical "has/have/had" (possession: "{} has the position of") takes do-support:
  "does not have". "has not the position of" is archaic, and a model reads "has not" as
  the perfect auxiliary waiting for a participle, which changes the query's structure.
  "has" before a participle ("{} has won") stays an auxiliary: "has not won".
- In a question with subject-auxiliary inversion, "not" goes after the subject when a
  predicate follows it ("Which family does {} not belong to?", "Which city was {} not
  born in?"), otherwise right after the auxiliary ("What is not the native language of
  {}?"), as in the protocol's examples.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from lemminflect import getAllLemmas, getInflection

PLACEHOLDER = "{}"

BE = frozenset({"am", "is", "are", "was", "were"})
HAVE = frozenset({"has", "have", "had"})
DO = frozenset({"do", "does", "did"})
MODALS = frozenset({"will", "would", "can", "could", "may", "might", "must", "should", "shall"})
AUXILIARIES = BE | HAVE | DO | MODALS
WH_WORDS = frozenset({"who", "whom", "whose", "what", "which", "when", "where", "why", "how"})
RELATIVE = frozenset({"who", "whom", "whose", "which", "that", "where", "when"})
PERSONAL = frozenset({"it", "he", "she", "they", "we", "you", "i"})
PLURAL_PERSONAL = frozenset({"they", "we", "you", "i"})
DETERMINERS = frozenset({"the", "a", "an", "this", "that", "these", "those", "his", "her", "its", "their", "our", "my"})
# Words that open a predicate right after an inverted subject ("is {} a citizen of",
# "is {} in"): a closed list, because an unknown word after the subject is more often
# the rest of a noun phrase ("the {} government").
PREDICATE_OPENERS = frozenset({
    "a", "an", "the", "in", "on", "at", "from", "by", "of", "to", "with", "for", "into", "near",
    "about", "under", "over", "after", "as", "within", "part", "apart", "home",
})
NEGATORS = frozenset({"not", "n't", "never"})
DO_FOR_TAG = {"VBZ": "does", "VBD": "did", "VBP": "do"}
DO_TAG = {do: tag for tag, do in DO_FOR_TAG.items()}

_TOKEN = re.compile(r"\{\}(?:'s|')?|[A-Za-z]+(?:['\-][A-Za-z]+)*|\S")


@dataclass(frozen=True)
class Token:
    text: str
    start: int
    end: int

    @property
    def low(self) -> str:
        return self.text.lower()

    @property
    def is_subject(self) -> bool:
        return self.text.startswith(PLACEHOLDER)

    @property
    def is_possessive(self) -> bool:
        return self.is_subject and self.text != PLACEHOLDER

    @property
    def is_word(self) -> bool:
        return self.text[0].isalpha()


@dataclass(frozen=True)
class RuleResult:
    """What the rules made of a template; ``negated`` is None when ``ok`` is False."""

    negated: str | None
    rule: str
    reason: str = ""

    @property
    def ok(self) -> bool:
        return self.negated is not None


@lru_cache(maxsize=8192)
def verb_readings(word: str) -> tuple[tuple[str, str], ...]:
    """(Penn tag, lemma) pairs for the finite/participle forms ``word`` can be, dictionary
    only: an unknown word (a typo, a name) is not guessed to be a verb."""
    low = word.lower()
    lemmas = getAllLemmas(low, upos="VERB").get("VERB", ())
    out: list[tuple[str, str]] = []
    for tag in ("VBZ", "VBD", "VBN", "VBG", "VBP"):
        for lemma in lemmas:
            forms = (lemma,) if tag == "VBP" else getInflection(lemma, tag=tag) or ()
            if low in forms:
                out.append((tag, lemma))
    return tuple(out)


def _reading(word: str, tags: tuple[str, ...]) -> tuple[str, str] | None:
    """The first reading of ``word`` among ``tags``, in the order of ``tags``."""
    readings = verb_readings(word)
    for tag in tags:
        for t, lemma in readings:
            if t == tag:
                return t, lemma
    return None


def _is_participle(word: str) -> bool:
    return _reading(word, ("VBN", "VBG")) is not None


def _is_adjective(word: str) -> bool:
    return "ADJ" in getAllLemmas(word.lower())


def _is_adverb(word: str) -> bool:
    """A manner/time adverb that can sit between subject and verb ("{} originally aired")."""
    if word in {"first", "also", "still", "ever", "once", "often", "later", "now"}:
        return True
    lemmas = getAllLemmas(word)
    return word.endswith("ly") and word != "only" and "ADV" in lemmas and "NOUN" not in lemmas


def _is_noun_only(word: str) -> bool:
    lemmas = getAllLemmas(word.lower())
    return "NOUN" in lemmas and not ({"VERB", "ADJ", "ADV"} & set(lemmas))


def _is_base_verb(word: str) -> bool:
    return _reading(word, ("VBP",)) is not None


def tokenize(text: str) -> list[Token]:
    return [Token(m.group(), m.start(), m.end()) for m in _TOKEN.finditer(text)]


class _Clause:
    """One clause of a template: its tokens and the offset edits that negate it."""

    def __init__(self, text: str, offset: int) -> None:
        self.text = text
        self.offset = offset
        self.toks = tokenize(text)
        self.question = text.rstrip().endswith("?")

    def word(self, i: int) -> str:
        return self.toks[i].low if 0 <= i < len(self.toks) and self.toks[i].is_word else ""

    def subject_index(self) -> int | None:
        return next((i for i, t in enumerate(self.toks) if t.is_subject), None)

    # --- finding finite verbs -------------------------------------------------------
    def _have_is_aux(self, i: int) -> bool:
        nxt = self.word(i + 1)
        return nxt in NEGATORS or nxt in {"been", "got"} or (bool(nxt) and _reading(nxt, ("VBN",)) is not None)

    def _lexical(self, i: int, inverted: bool) -> tuple[str, str] | None:
        """The finite reading of token ``i`` if it stands where a finite lexical verb can."""
        if not self.toks[i].is_word or self.word(i - 1) in {"to"} | AUXILIARIES | NEGATORS:
            return None
        j = i - 1
        while j >= 0 and _is_adverb(self.word(j)):
            j -= 1  # "{} professionally plays": look through the adverb
        prev = self.toks[j] if j >= 0 else None
        if prev is not None and prev.text == PLACEHOLDER:
            return _reading(self.toks[i].text, ("VBZ", "VBD"))
        if prev is not None and prev.low in PLURAL_PERSONAL:
            return _reading(self.toks[i].text, ("VBD", "VBP"))
        if prev is not None and prev.low in PERSONAL | RELATIVE:
            return _reading(self.toks[i].text, ("VBZ", "VBD"))
        if j >= 1 and self.toks[j - 1].is_possessive and prev is not None and prev.is_word:
            return _reading(self.toks[i].text, ("VBZ", "VBD"))  # "{}'s life ended in"
        if inverted and (prev is None or prev.low not in DETERMINERS):
            # wh-subject question: "Who founded {}?", "What company produced {}?"; but in
            # "What cast members ..." the "verb" is a noun modifier inside the wh-phrase.
            if prev is not None and prev.low in {"what", "which", "whose"} and _is_noun_only(self.word(i + 1)):
                return None
            return _reading(self.toks[i].text, ("VBZ", "VBD"))
        return None

    def finite_verbs(self, inverted: bool) -> list[tuple[int, str, str]]:
        """(index, kind, lemma/tag) for each finite verb; kind is "aux", "have" or a tag."""
        out: list[tuple[int, str, str]] = []
        subj = self.subject_index()
        for i, tok in enumerate(self.toks):
            w = self.word(i)
            if not w:
                continue
            if w in AUXILIARIES and self.word(i - 1) not in AUXILIARIES | NEGATORS | {"to"}:
                if w in HAVE and not self._have_is_aux(i):
                    out.append((i, "have", {"has": "VBZ", "had": "VBD"}.get(w, "VBP")))
                else:
                    out.append((i, "aux", w))
                continue
            reading = self._lexical(i, inverted)
            if reading is None:
                continue
            if inverted and subj is not None and i < subj and any(
                self.word(k) in AUXILIARIES for k in range(i + 1, subj)
            ):
                continue  # "What sports team was {} ...": "sports" is part of the wh-phrase
            out.append((i, reading[0], reading[1]))
        return out

    def in_relative_clause(self, i: int) -> bool:
        """True if verb ``i`` follows a relative pronoun with no finite verb in between."""
        for j in range(i - 1, -1, -1):
            if self.word(j) in RELATIVE and j > 0:
                return True
            if self.word(j) in AUXILIARIES or (self.toks[j].is_word and j != i and self._lexical(j, False)):
                return False
        return False


def _choose(clause: _Clause, inverted: bool) -> tuple[int, str, str] | None:
    verbs = clause.finite_verbs(inverted)
    if not verbs:
        return None
    if inverted:
        return verbs[0]  # the fronted auxiliary / the wh-subject's verb
    main = [v for v in verbs if not clause.in_relative_clause(v[0])]
    return (main or verbs)[-1]  # the verb right before the object slot


def _insert_before(clause: _Clause, i: int) -> int:
    return clause.offset + clause.toks[i].start


def _insert_after(clause: _Clause, i: int) -> int:
    return clause.offset + clause.toks[i].end


def _splice(template: str, at: int, text: str) -> str:
    """Insert the word ``text`` at ``at``, a token start (before it) or a token end (after),
    with a space on each side where a word touches it ("{}named" -> "{} not named")."""
    left = "" if at == 0 or template[at - 1] == " " else " "
    right = " " if at < len(template) and template[at] not in " ?,.!:;)" else ""
    return template[:at] + left + text + right + template[at:]


def _predicate_like(word: str, stranded: bool) -> bool:
    """Could ``word``, right after an inverted subject, open the predicate?"""
    if _is_participle(word) or (_is_adjective(word) and word != "home"):
        return True
    if not getAllLemmas(word) and word.endswith("ed"):
        return True  # an unknown participle ("incepted"): still a verb form, not a noun
    return word in NEGATORS or (stranded and word in PREDICATE_OPENERS)


def _inverted_subject_end(clause: _Clause, aux: int, need_verb: bool) -> int | None:
    """For "AUX SUBJECT PREDICATE", the last token of SUBJECT when the predicate is
    clearly separate from it, else None (then "not" goes right after the auxiliary)."""
    if clause.word(aux + 1) in PERSONAL and clause.word(aux + 2):
        return aux + 1  # "would you find", "was it when"
    subj = clause.subject_index()
    if subj is None or subj <= aux:
        return None
    between = [clause.word(k) for k in range(aux + 1, subj)]
    if any(w in AUXILIARIES or w in RELATIVE for w in between):
        return None
    tok = clause.toks[subj]
    end = subj + 1 if tok.is_possessive else subj  # "does {}'s death occur": skip the head noun
    nxt = clause.word(end + 1)
    if not nxt:
        return None
    if need_verb:
        return end if _is_base_verb(nxt) or _is_adverb_then_verb(clause, end + 1) else None
    if tok.is_possessive:
        return None
    stranded = not clause.word(end + 2)  # "is the band {} from?"
    if not between:
        return end if _predicate_like(nxt, stranded=True) else None
    if between in (["the"], ["a"], ["an"]):
        return end if _predicate_like(nxt, stranded=stranded) else None
    # A longer subject: "Which city is the headquarter of {} located in?". After a bare
    # "What is", the rest is one noun phrase ("What is the year {} discovered?").
    bare_wh = aux == 1 and clause.word(0) in WH_WORDS
    if _predicate_like(nxt, stranded) and (clause.word(subj - 1) in PREDICATE_OPENERS or not bare_wh):
        return end
    return None


def _is_adverb_then_verb(clause: _Clause, i: int) -> bool:
    return _is_adverb(clause.word(i)) and _is_base_verb(clause.word(i + 1))


def _do_main_verb(clause: _Clause, aux: int) -> int | None:
    """The bare verb of "DO SUBJECT VERB", when the subject is not led by the placeholder."""
    for k in range(aux + 2, len(clause.toks)):
        if clause.toks[k].is_word and _is_base_verb(clause.word(k)) and clause.word(k - 1) not in DETERMINERS:
            return k
    return None


def _do_support(template: str, clause: _Clause, i: int, tag: str, lemma: str, prefix: str) -> RuleResult:
    """Replace finite verb ``i`` (and a coordinated one: "sang or played") by DO not BASE."""
    toks = clause.toks
    do = DO_FOR_TAG[tag]
    start = i
    while start > 0 and _is_adverb(clause.word(start - 1)):
        start -= 1  # "does not professionally play": negate before the adverb
    if toks[start].text[0].isupper():
        do = do.capitalize()
    pieces = [(toks[start].start, toks[start].start, f"{do} not "), (toks[i].start, toks[i].end, lemma)]
    if clause.word(i + 1) in {"or", "and"} and i + 2 < len(toks):
        other = _reading(toks[i + 2].text, (tag,))
        if other is not None:
            pieces.append((toks[i + 2].start, toks[i + 2].end, other[1]))
    text = clause.text
    for s, e, new in sorted(pieces, reverse=True):
        text = text[:s] + new + text[e:]
    negated = template[: clause.offset] + text + template[clause.offset + len(clause.text) :]
    return RuleResult(negated, f"{prefix}do-support:{toks[i].text}->{do.lower()} not {lemma}")


def negate_by_rules(template: str) -> RuleResult:
    """Negate ``template`` with the grammar rules alone (no tables)."""
    if template.count(PLACEHOLDER) != 1:
        raise ValueError(f"a template must contain exactly one '{{}}': {template!r}")
    body = template.rstrip()
    cut = body.rfind("?", 0, len(body) - 1)
    if cut < 0:
        return _negate_clause(template, _Clause(template, 0))
    # "What is the twin city of {}? It is": the clause after the question carries the
    # object slot; in "Q: What is the capital of {}? A:" it has no verb, so the question does.
    tail = _negate_clause(template, _Clause(template[cut + 1 :], cut + 1))
    if tail.ok or tail.reason.startswith("already"):
        return tail
    return _negate_clause(template, _Clause(template[: cut + 1], 0))


def _negate_clause(template: str, clause: _Clause) -> RuleResult:
    prefix = "question-" if clause.question else ""
    words = [t.low for t in clause.toks if t.is_word]
    if not words:
        return RuleResult(None, "unnegatable", "no words outside the placeholder")
    if any(w.endswith("n't") for w in words):
        return RuleResult(None, "unnegatable", "already negated (a contraction with n't)")
    first_verbs = clause.finite_verbs(inverted=False)
    first_verb_at = first_verbs[0][0] if first_verbs else len(clause.toks)
    inverted = clause.question and (
        words[0] in AUXILIARIES or any(clause.word(k) in WH_WORDS for k in range(first_verb_at))
    )
    chosen = _choose(clause, inverted)
    if chosen is None:
        if NEGATORS & set(words):  # "{}, not in": a fragment that is negated already
            return RuleResult(None, "unnegatable", "already negated (no verb)")
        return _participle_rule(template, clause)
    i, kind, info = chosen
    if any(clause.word(k) in NEGATORS for k in range(i + 1, len(clause.toks))):
        # "does {} not belong", "is not located": negating again would give "not not"
        return RuleResult(None, "unnegatable", f"already negated after {clause.toks[i].text!r}")
    if kind == "have":
        return _do_support(template, clause, i, info, "have", prefix)
    if kind != "aux":
        return _do_support(template, clause, i, kind, info, prefix)
    subj = clause.subject_index()
    if inverted and subj is not None and subj > i:
        if info in DO | MODALS:  # these take a bare verb: "does {} not belong", "can {} not be"
            end = _inverted_subject_end(clause, i, need_verb=True)
            if end is not None:
                at = _insert_after(clause, end)
            else:
                verb = _do_main_verb(clause, i)
                if verb is None:
                    return RuleResult(None, "unnegatable", f"no main verb after {clause.toks[i].text!r}")
                at = _insert_before(clause, verb)
        else:
            end = _inverted_subject_end(clause, i, need_verb=False)
            at = _insert_after(clause, end if end is not None else i)
        return RuleResult(_splice(template, at, "not"), f"question-aux:{info}")
    if info in DO and not (_is_base_verb(clause.word(i + 1)) or _is_adverb_then_verb(clause, i + 1)):
        # lexical "do" ("{} did the design of"): "did not do", as for any lexical verb
        return _do_support(template, clause, i, DO_TAG[info], "do", prefix)
    return RuleResult(_splice(template, _insert_after(clause, i), "not"), f"{prefix}aux-insert:{info}")


def _participle_rule(template: str, clause: _Clause) -> RuleResult:
    """No finite verb: "{}, developed by" (a reduced relative) -> "{}, not developed by"."""
    subj = clause.subject_index()
    if subj is not None and clause.toks[subj].text == PLACEHOLDER and subj + 2 < len(clause.toks):
        if clause.toks[subj + 1].text == "," and _is_participle(clause.word(subj + 2)):
            at = _insert_before(clause, subj + 2)
            return RuleResult(_splice(template, at, "not"), f"participle-insert:{clause.toks[subj + 2].text}")
    return RuleResult(None, "unnegatable", "no finite verb or participle found")
