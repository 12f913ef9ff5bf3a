"""The shortcut battery's cost (docs/battery.md#cost): every default probe measured as a run
measures it — the unedited model once per dataset (baseline), then per method each stage it
takes part in (positive; negation also negative) — on the same records, side by side. The
battery's seconds against the other probes' in a run of ``methods`` methods (the demo's two):
its evaluation time without the battery. The budget is 30 %. No edit is made: a probe asks the
same queries of an edited model, so its cost is the same."""

from __future__ import annotations

import time

from editprobe.data import load_records
from editprobe.probes import PROBES, build_negation_plan, default_probes
from editprobe.probes.base import ProbeContext
from editprobe.probes.battery import BATTERY_TABLE
from editprobe.runs.plan import order_probes

from .table import Ratio

GOAL = 0.3


def _context(loaded, n: int) -> ProbeContext:
    from editprobe.runs.config import RunConfig

    records = load_records("counterfact-sample", limit=n).records
    plan = build_negation_plan(records)
    return ProbeContext(dataset="counterfact-sample", records=[i.record for i in plan.items], plan=plan,
                        model=loaded.model, tokenizer=loaded.tokenizer, config=RunConfig(model=loaded.name))


def probe_seconds(loaded, n: int, names=None) -> dict[str, tuple[float, float]]:
    """(baseline s, per-method s) of each default probe that applies (or of ``names``)."""
    ctx = _context(loaded, n)
    probes = [p for p in order_probes([PROBES[name] for name in (names or default_probes())]) if p.applies_to(ctx)]
    seconds: dict[str, tuple[float, float]] = {}
    for p in probes:
        started = time.perf_counter()
        base = p.measure(ctx, "baseline", None) if "baseline" in p.stages else None
        baseline = time.perf_counter() - started
        started = time.perf_counter()
        for stage in ("positive", "negative"):
            if stage in p.stages:
                p.measure(ctx, stage, base)
        seconds[p.name] = (baseline, time.perf_counter() - started)
    return seconds


def in_a_run(seconds: tuple[float, float], methods: int) -> float:
    return seconds[0] + methods * seconds[1]


def run(loaded, n: int = 40, methods: int = 2) -> list[Ratio]:
    seconds = probe_seconds(loaded, n)
    battery = {k: in_a_run(v, methods) for k, v in seconds.items() if PROBES[k].table == BATTERY_TABLE}
    rest = sum(in_a_run(v, methods) for k, v in seconds.items() if k not in battery)
    per = ", ".join(f"{k} {1000 * v / n:.0f}" for k, v in battery.items())
    return [Ratio("battery", f"the run's other probes ({methods} methods, {n} records)", sum(battery.values()), rest,
                  GOAL, f"ms per record in such a run: {per}")]
