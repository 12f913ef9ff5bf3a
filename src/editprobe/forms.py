"""The forms in which a fact can be asked (docs/battery.md#trained-forms).

An editor declares the forms its optimization sees (``Editor.trains_on`` /
``trained_forms()``); a probe declares the forms each of its metrics asks
(``Probe.metric_forms``). Where the two meet, the metric reads back a training objective
rather than measuring generalization: a run records those cells (``ResultRow.trained_cells``)
and every table marks them. Shared by editing and probes, so it lives on the ground floor.
"""

from __future__ import annotations

from enum import Enum


class QueryForm(str, Enum):
    """One way of asking the edited fact (or, for an editor trained before editing, such as
    RLEdit's hypernetwork, a way its training asked other facts)."""

    POSITIVE = "positive"  # the edited prompt itself ("The mother tongue of X is")
    PARAPHRASE = "paraphrase"  # a rewording of the edited prompt
    NEGATED = "negated"  # the prompt with its relation negated ("... is not")
    PREFIXED = "prefixed"  # the prompt behind random context prefixes (the LTE templates)
    QUESTION = "question"  # the fact asked as a question or a true/false statement
    NEGATED_PARAPHRASE = "negated-paraphrase"  # a rewording, negated
    CLOZE = "cloze"  # the fact as a fill-in-the-blank sentence
    TWO_CHOICE = "two-choice"  # "...? A) o B) o*": pick a letter
    OTHER_RELATION = "other-relation"  # the edited subject under another relation
    DISTRACTION = "distraction"  # the edited statement, then an unrelated question


# Every editor trains on the edited prompt: a metric of that form alone (efficacy, PP) is the
# edit's target by definition, and is not marked.
UNMARKED = frozenset({QueryForm.POSITIVE})


def trained_metrics(metric_forms: dict[str, frozenset[QueryForm]], trained: frozenset[QueryForm]) -> list[str]:
    """The metrics (of one probe) that ask a form the editor trained on, other than the edited
    prompt itself."""
    marked = trained - UNMARKED
    return [metric for metric, forms in metric_forms.items() if forms & marked]
