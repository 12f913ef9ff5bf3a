"""Registered, versioned metric definitions (the lesson of lm-eval-harness: a number must
carry the protocol it was measured under).

A probe definition is declarative: a name, a version and a protocol *label* saying exactly
how the number is computed (decoding, ground truth, query, model state). Every result and
every per-sample record carries the name, version and label of the probe that made it, so
a number can never lose the protocol it was measured under. Bump a probe's version
whenever the way it is computed changes (prompt wording, decoding, inclusion rule).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, field_validator

from ..registry import Registry


class ProbeDefinition(BaseModel):
    """How one metric is computed; ``label`` is what reports print beside the number."""

    model_config = ConfigDict(frozen=True)

    name: str  # "negation/PN"
    version: int = 1
    label: str  # "exact-match, teacher-forced greedy, target = new object o*, ..."
    protocol: str = ""  # where the definition comes from, e.g. "docs/protocol.md#negated-queries"
    higher_is_better: bool | None = None  # None: a diagnostic with no preferred direction
    unit: str = "%"

    @field_validator("name", "label")
    @classmethod
    def _not_blank(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must not be empty")
        return v

    @property
    def tag(self) -> dict[str, str | int]:
        """What every result built by this probe records about it."""
        return {"probe": self.name, "probe_version": self.version, "label": self.label}


DEFINITIONS: Registry[ProbeDefinition] = Registry("probe definition", key=lambda definition: definition.name)


def register_definition(definition: ProbeDefinition, replace: bool = False) -> ProbeDefinition:
    """Add a metric definition (registry rules: see editprobe/registry.py)."""
    return DEFINITIONS.register(definition, replace=replace)


def get_definition(name: str) -> ProbeDefinition:
    return DEFINITIONS[name]


# --- the built-in probes ----------------------------------------------------------------------

_EM = "exact-match, teacher-forced greedy (argmax = target at every target token)"
_EM_DOC = "docs/protocol.md#exact-match"
_NEG_DOC = "docs/protocol.md#negated-queries"
_FC_DOC = "docs/protocol.md#fact-checking"

EXACT_FAST = register_definition(ProbeDefinition(
    name="exact-match/fast", label=f"{_EM}, len(target_ids) tokens after the query", protocol=_EM_DOC,
    higher_is_better=True))
EXACT_GENERATE = register_definition(ProbeDefinition(
    name="exact-match/generate", label="exact-match, generate() greedy, len(target_ids) new tokens after the query",
    protocol=_EM_DOC, higher_is_better=True))

# The four negation settings: (edited with, queried with, meaning).
_SETTINGS = {
    "PP": ("positive", "positive", True),
    "PN": ("positive", "negated", False),
    "NN": ("negated", "negated", True),
    "NP": ("negated", "positive", False),
}
NEGATION_SETTINGS: dict[str, ProbeDefinition] = {
    name: register_definition(ProbeDefinition(
        name=f"negation/{name}",
        label=f"{_EM}, target = new object o*, edited with {edited} requests, query = {queried} template",
        protocol=_NEG_DOC, higher_is_better=better))
    for name, (edited, queried, better) in _SETTINGS.items()
}
NEGATION_DISCREPANCY = register_definition(ProbeDefinition(
    name="negation/discrepancy",
    label="efficacy - hallucination (PP-PN, PP-NP, NN-PN, NN-NP) and Avg = their mean, from exact-match of o*",
    protocol=_NEG_DOC, higher_is_better=True, unit="points"))
# Leakage among the records whose edit succeeded: PN over the records whose PP hit, NP over
# those whose NN hit (same edited model, same records): comparable across methods whose PP differs.
NEGATION_CONDITIONAL: dict[str, ProbeDefinition] = {
    f"{leak}|{given}": register_definition(ProbeDefinition(
        name=f"negation/{leak}-given-{given}",
        label=f"{_EM}, target = new object o*, {leak} over the records whose {given} query exact-matches o* "
              "(same edited model)",
        protocol="docs/protocol.md#leakage-among-successful-edits", higher_is_better=False))
    for leak, given in (("PN", "PP"), ("NP", "NN"))
}
NO_EDIT_KNOWN = register_definition(ProbeDefinition(
    name="negation/no-edit-known",
    label=f"{_EM}, unedited model, target = old object o, query = positive template, over all records with "
          "an old object (what share of the facts the model knows; selects the baseline's records)",
    protocol=_NEG_DOC, higher_is_better=None))
NO_EDIT_PP = register_definition(ProbeDefinition(
    name="negation/no-edit-PP",
    label=f"{_EM}, unedited model, target = old object o, query = positive template "
          "(records kept only where it matches, so 100 by construction)",
    protocol=_NEG_DOC, higher_is_better=True))
NO_EDIT_PN = register_definition(ProbeDefinition(
    name="negation/no-edit-PN",
    label=f"{_EM}, unedited model, target = old object o, query = negated template, over records whose "
          "positive query exact-matches o",
    protocol=_NEG_DOC, higher_is_better=False))

FACTCHECK_ACCURACY = register_definition(ProbeDefinition(
    name="factcheck/accuracy",
    label="fact-check via chat template, greedy, first word true/false/other; % 'true' after the edit for the "
          "new-object statement, over records the unedited model answered true/false and not 'true' both before and after",
    protocol=_FC_DOC, higher_is_better=True))
FACTCHECK_NO_EDIT = register_definition(ProbeDefinition(
    name="factcheck/no-edit",
    label="fact-check via chat template, greedy, first word; unedited model, old-object statement, % 'true' "
          "over records with an old object",
    protocol=_FC_DOC, higher_is_better=True))
FACTCHECK_CONTROL = register_definition(ProbeDefinition(
    name="factcheck/control",
    label="fact-check via chat template, greedy, first word; edited model, old-object statement, % 'true' over "
          "the included records (a model answering 'true' to everything scores high here too)",
    protocol=_FC_DOC, higher_is_better=None))

PARAPHRASE = register_definition(ProbeDefinition(
    name="classic/paraphrase-efficacy",
    label=f"{_EM}, target = new object o*, query = each paraphrase prompt; mean over a record's prompts, "
          "then over records",
    protocol="docs/protocol.md#classic-metrics", higher_is_better=True))
NEIGHBORHOOD = register_definition(ProbeDefinition(
    name="classic/neighborhood-specificity",
    label=f"{_EM}, target = the unedited model's own greedy continuation (len(dataset answer) tokens), "
          "query = each neighborhood prompt; mean over a record's prompts, then over records",
    protocol="docs/protocol.md#classic-metrics", higher_is_better=True))
