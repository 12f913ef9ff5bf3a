"""What every picture of the report shares: the colours and the resolution."""

from __future__ import annotations

# Okabe–Ito colours: distinguishable under the common colour-vision deficiencies.
COLOURS = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00")
DPI = 110
