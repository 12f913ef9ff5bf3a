"""What each column of the fixed tables means: the one text that the Markdown, LaTeX and HTML
outputs print under the table (the classic and battery tables build theirs from the probes'
own labels). A legend lists only the columns its table has, then the rows and protocol
entries ("No edit", "Protocol") that are not columns. The marks († ‡) are explained by the
table's notes (cells.py), printed where a cell carries one.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import pandas as pd

from .cells import NO_EDIT

_METHOD = "the editor; a suffix names a variant, K_p where runs differ in it, the seed where runs differ in it"
_EXACT = "exact match of o* (teacher-forced greedy: the argmax is the target at every target token)"
_NEGATION = {
    "Method": _METHOD,
    "PP": f"edited with s r → o*, asked s r: % of records, {_EXACT}; efficacy, higher is better",
    "PN": "edited with s r → o*, asked the negated s not-r: % of records still completing o*; hallucination, "
          "lower is better",
    "NN": "edited with the negated request s not-r → o*, asked s not-r: % completing o*; higher is better",
    "NP": "edited with s not-r → o*, asked s r: % completing o*; lower is better",
    "PP−PN": "efficacy minus hallucination, in points (likewise PP−NP, NN−PN, NN−NP): higher is better",
    "Avg": "the mean of the discrepancies the row has (PP−PN alone on the No edit row and on runs edited "
           "positively only)",
    "PN|PP": "PN over only the records whose PP query hit (leakage among successful edits); its n is PP hits",
    "PP hits": "the records whose PP query exact-matches o*: the n of PN|PP",
    "NP|NN": "NP over only the records whose NN query hit; its n is NN hits",
    "NN hits": "the records whose NN query exact-matches o*: the n of NP|NN",
    "No edit": "the unedited model with its own old object o as the target, over the records whose positive "
               "query it exact-matches (so PP is 100 by construction; zsRE has no old object and no such row)",
    "n": "each setting is a share of the run's records; the HTML report prints it as k/n under the percentage",
    "Protocol": "docs/protocol.md#negated-queries; intervals: docs/statistics.md",
}
_FACTCHECK = {
    "Method": _METHOD,
    "Eff": "PP of the same edited model (exact match of o* after s r): what the edit did",
    "Acc": "% of the included records whose statement “s r o*” the edited model judges true (chat template, "
           "greedy, first word true/false); the gap to Eff is the finding",
    "n": "the included records: the unedited model answered true or false to the o* statement, and not "
         "true both before and after the edit",
    "Control": "% of the included records whose old-object statement “s r o” the edited model judges true "
               "(high for a model that answers true to everything)",
    "Balanced": "per included record, the mean of true to the o* statement and false to the o statement: a "
                "model that answers true to everything gets 50, not 100",
    "No edit": "the unedited model asked about the old-object statement, over the records whose o it "
               "exact-matches (Eff 100 by construction)",
    "Protocol": "docs/protocol.md#fact-checking; intervals: docs/statistics.md",
}
_ABLATION = {
    "Method": "the editor (MEMIT-family methods, run with and without the term)",
    "K_p": "with or without the preserved keys K_p K_pᵀ of earlier edits in the update",
    "PP": "the negation table's settings and discrepancies, as defined there (PP, PN, NN, NP, PP−PN, Avg)",
    "Protocol": "docs/protocol.md#negated-queries",
}
_COST = {
    "edit s/request": "seconds of editing per request (the positive run's batches, over its records)",
    "negation probe ms/query": "milliseconds per query of the negation probe on the positively edited model "
                               "(PP and PN: 2 queries per record); the No edit row: on the unedited model",
}
_SEEDS = {
    "Metric": "the probe and metric (probe metric)",
    "seeds": "how many runs that differ only by seed the row pools",
    "mean": "the metric's mean over the seeds, with the pooled 95% interval over the records where every "
            "run kept its per-record values",
    "sd": "the standard deviation of the metric from seed to seed",
    "Protocol": "docs/protocol.md#seeds",
}
_SETTINGS = {
    "dtype": "the dtype the model ran in",
    "C0 corpus": "the corpus of the key statistics C0 (MEMIT-family methods), and how it was sampled",
    "C0 documents": "documents read for C0 (the fewest over the layers) of those asked for",
    "hparams file": "the hyperparameter file the method ran with",
    "chosen by": "why that file (the model's own, a fallback ...)",
    "intervals": "how the row's 95% intervals were drawn",
    "targets": "what zsRE records were edited toward",
    "checkpoint sha256": "the fingerprint of the evaluated checkpoint (editprobe evaluate)",
}
LEGENDS: Mapping[str, Mapping[str, str]] = MappingProxyType({
    "negation": _NEGATION, "factcheck": _FACTCHECK, "ablation": _ABLATION, "cost": _COST, "seeds": _SEEDS,
    "settings": _SETTINGS})
# Legend entries that are no column: a row, the count or the protocol.
_NOT_COLUMNS = ("No edit", "n", "Protocol")


def legend_for(name: str, df: pd.DataFrame) -> dict[str, str] | None:
    """The legend of table ``name`` restricted to the columns ``df`` has (None: no legend)."""
    found = LEGENDS.get(name)
    if found is None:
        return None
    has_no_edit = "Method" in df.columns and bool((df["Method"] == NO_EDIT).any())
    keep = set(df.columns) | set(_NOT_COLUMNS) - ({"No edit"} if not has_no_edit else set())
    return {k: v for k, v in found.items() if k in keep} or None
