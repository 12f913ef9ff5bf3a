"""One row per measured stage of `make bench`: the time measured, the floor it is compared
with (measured in the same run, never estimated), their ratio and the goal."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Ratio:
    stage: str  # e.g. "target optimization"
    versus: str  # what the floor is, e.g. "per-request full-model loop"
    measured_s: float
    floor_s: float
    goal: float | None = None  # the ratio measured/floor must stay at or below this (None: no goal)
    detail: str = ""  # throughput, token budget, ... one short line

    @property
    def ratio(self) -> float:
        return self.measured_s / self.floor_s

    @property
    def met(self) -> bool | None:
        return None if self.goal is None else self.ratio <= self.goal

    def as_dict(self) -> dict:
        return {**asdict(self), "ratio": self.ratio, "met": self.met}


def format_table(rows: list[Ratio]) -> str:
    head = f"{'stage':<28} {'vs':<40} {'measured s':>10} {'floor s':>9} {'ratio':>7} {'goal':>6}  met"
    lines = [head, "-" * len(head)]
    for r in rows:
        goal = f"{r.goal:.2f}" if r.goal is not None else "-"
        met = {None: "-", True: "yes", False: "NO"}[r.met]
        lines.append(f"{r.stage:<28} {r.versus:<40} {r.measured_s:>10.2f} {r.floor_s:>9.2f} {r.ratio:>7.2f} {goal:>6}  {met}")
        if r.detail:
            lines.append(f"{'':<28} {r.detail}")
    return "\n".join(lines)
