"""Probes: every metric says how it was computed (a registered, versioned definition with
a protocol label, carried by every result and sample). A run's probes are plug-ins
(``base.Probe``, registered in ``PROBES``); the built-in ones live in ``builtin/``.

- exact match, fast (teacher-forced) and generate() paths — ``exact``
- negated queries: plan, PP/PN/NN/NP, discrepancies — ``negation``; no-edit row — ``baseline``
- fact-checking queries — ``factcheck``
- paraphrase efficacy, neighborhood specificity — ``classic``
"""

from .baseline import NoEditBaseline, no_edit_baseline
from .classic import (
    ClassicResult,
    NeighborhoodReference,
    neighborhood_reference,
    neighborhood_specificity,
    paraphrase_efficacy,
)
from .exact import (
    FAST_LABEL,
    GENERATE_LABEL,
    Decoded,
    decode_targets,
    exact_match_batch,
    exact_match_ids,
    generate_exact_match,
)
from .factcheck import (
    FactCheckConfig,
    FactCheckNoEdit,
    FactCheckReply,
    FactCheckResult,
    ask_records,
    ask_statements,
    fact_check_prompt,
    fact_check_result,
    make_statement,
    no_edit_fact_check,
    parse_answer,
)
from .generation import greedy_decode
from .negation import (
    ExcludedRecord,
    NegationPlan,
    NegationRun,
    NegationScores,
    build_negation_plan,
    conditional_leakage,
    negation_scores,
    score_negation_run,
)
from .base import PROBES, Metric, Probe, ProbeContext, ProbeOutcome, default_probes, register_probe, resolve_probe
from .registry import DEFINITIONS, ProbeDefinition, get_definition, register_definition
from .results import ProbeSample, Score
from . import builtin  # noqa: E402,F401,I001  (registers the built-in probes)  isort: skip

__all__ = [
    "DEFINITIONS", "FAST_LABEL", "GENERATE_LABEL", "PROBES", "Metric", "Probe", "ProbeContext", "ProbeOutcome",
    "default_probes", "get_definition", "register_definition", "resolve_probe", "ClassicResult", "Decoded", "ExcludedRecord", "FactCheckConfig",
    "FactCheckNoEdit", "FactCheckReply", "FactCheckResult", "NegationPlan", "NegationRun", "NegationScores",
    "NeighborhoodReference", "NoEditBaseline", "ProbeDefinition", "ProbeSample", "Score", "ask_records",
    "ask_statements", "build_negation_plan", "conditional_leakage", "decode_targets", "exact_match_batch", "exact_match_ids",
    "fact_check_prompt", "fact_check_result", "generate_exact_match", "greedy_decode",
    "make_statement", "negation_scores", "neighborhood_reference", "neighborhood_specificity", "no_edit_baseline",
    "no_edit_fact_check", "paraphrase_efficacy", "parse_answer", "register_probe", "score_negation_run",
]
