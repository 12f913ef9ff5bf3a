"""Turn the tokenized WikiText-2 files into plain text: the built-in covariance corpus.

WikiText ships Moses-style tokens: ``1 @,@ 000``, ``red @-@ tipped``, spaces around all
punctuation, ``<unk>`` for words outside its 33k vocabulary and `` = Heading = `` lines.
Covariance statistics should see text the way a model saw it in pretraining, so:

* ``" @-@ "`` -> ``"-"``, ``" @,@ "`` -> ``","``, ``" @.@ "`` -> ``"."``;
* no space before ``, . ; : ' ) ! ?`` and none after ``(``; ``" x "`` -> ``"x"`` when a
  pair of double quotes is found on the line;
* ``<unk>`` tokens are dropped, with a joiner that glued one to a neighbour and a
  bracket or quote pair they leave empty: a missing rare word disturbs the hidden states
  less than a markup token no pretraining text contains;
* heading lines are dropped; each remaining line (a WikiText paragraph) is one document.

``python -m editprobe.data.builders wikitext SRC_DIR OUT`` regenerates the built-in file
(data/builders.py).
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Iterator

WIKITEXT_SPLITS = ("valid.txt", "test.txt")  # the order of the built-in sample

_JOINERS = {"@-@": "-", "@,@": ",", "@.@": "."}
_UNK = "<unk>"
# Bracket/quote pairs that are left empty once the unknown words between them are dropped.
_EMPTY_PAIRS = {('"', '"'), ("(", ")"), ("'", "'"), ("[", "]")}
_QUOTED = re.compile(r'" ([^"]*?) "')
_SPACE_BEFORE = re.compile(r" +([,.;:')!?])")
_SPACE_AFTER_OPEN = re.compile(r"\( +")
_SPACES = re.compile(r" {2,}")
_HAS_WORD = re.compile(r"\w")


def is_heading(line: str) -> bool:
    stripped = line.strip()
    return stripped.startswith("= ") and stripped.endswith(" =")


def _drop_unknown_words(tokens: list[str]) -> list[str]:
    """Drop ``<unk>`` tokens, a joiner that glued one to a neighbour (``anti @-@ <unk>``,
    ``16 @,@ <unk>``) and a quote/bracket pair the removal leaves empty."""
    out: list[str] = []
    dropped = False  # an <unk> was dropped since the last kept token
    for tok in tokens:
        if tok == _UNK:
            if out and out[-1] in _JOINERS:
                out.pop()
            dropped = True
            continue
        if dropped and tok in _JOINERS:
            continue
        if dropped and out and (out[-1], tok) in _EMPTY_PAIRS:
            out.pop()
            continue
        out.append(tok)
        dropped = False
    return out


def detokenize_wikitext(line: str) -> str:
    """One tokenized WikiText line as plain text (see the module docstring)."""
    tokens = _drop_unknown_words(line.split())
    text = " ".join(tokens)
    for token, plain in _JOINERS.items():
        # " @,@ " joins two tokens; a joiner at a line's edge just becomes the character.
        text = text.replace(f" {token} ", plain).replace(token, plain)
    text = _QUOTED.sub(r'"\1"', text)
    text = _SPACE_BEFORE.sub(r"\1", text)
    text = _SPACE_AFTER_OPEN.sub("(", text)
    return _SPACES.sub(" ", text).strip()


def wikitext_documents(lines: Iterable[str]) -> Iterator[str]:
    """Plain-text paragraphs of a tokenized WikiText file, headings and blanks dropped."""
    for line in lines:
        if not line.strip() or is_heading(line):
            continue
        doc = detokenize_wikitext(line)
        if _HAS_WORD.search(doc):
            yield doc


if __name__ == "__main__":  # pragma: no cover - the entry point moved with the builder
    sys.exit("usage: python -m editprobe.data.builders wikitext WIKITEXT2_DIR OUT.txt")
