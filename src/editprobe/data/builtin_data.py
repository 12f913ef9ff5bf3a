"""Data shipped inside the package, and ``resolve_data``: a path or a built-in name. (How
the shipped files were made: data/builders.py.)"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import DataError

BUILTIN_DIR = Path(__file__).resolve().parent / "builtin"


@dataclass(frozen=True)
class BuiltinData:
    name: str
    filename: str
    description: str
    license: str
    # A slice of the file's documents (corpora): [first, last) in document order; a
    # negative ``last`` counts from the end.
    first: int = 0
    last: int | None = None

    @property
    def path(self) -> Path:
        return BUILTIN_DIR / self.filename


BUILTIN_DATASETS: dict[str, BuiltinData] = {
    "counterfact-sample": BuiltinData(
        name="counterfact-sample",
        filename="counterfact_sample.json",
        description="first 300 records of a filtered CounterFact subset (ROME format)",
        license="MIT",
    ),
    "counterfact-train": BuiltinData(
        name="counterfact-train",
        filename="counterfact_train.json",
        description="2000 CounterFact records (EasyEdit flat format) sharing no subject and no prompt with "
                    "counterfact-sample and zsre-sample: training data for RLEdit's hypernetwork",
        license="MIT",
    ),
    "zsre-sample": BuiltinData(
        name="zsre-sample",
        filename="zsre_sample.json",
        description="first 300 records of a zsRE editing set (MEND format, with portability questions)",
        license="MIT",
    ),
}

# The last paragraphs of the sample are held out from the covariance corpus, so that a
# perplexity measured on them (the perplexity probe) is on text no edit's C0 has seen.
HELD_OUT_DOCS = 200

BUILTIN_CORPORA: dict[str, BuiltinData] = {
    "wikitext-sample": BuiltinData(
        name="wikitext-sample",
        filename="wikitext2_sample.txt",
        description=f"WikiText-2 valid+test, detokenized, one paragraph per document, without the last "
                    f"{HELD_OUT_DOCS} (held out)",
        license="CC BY-SA 3.0",
        last=-HELD_OUT_DOCS,
    ),
    "wikitext-heldout": BuiltinData(
        name="wikitext-heldout",
        filename="wikitext2_sample.txt",
        description=f"the last {HELD_OUT_DOCS} paragraphs of the WikiText-2 sample (held out from wikitext-sample)",
        license="CC BY-SA 3.0",
        first=-HELD_OUT_DOCS,
    ),
}

COUNTERFACT_SAMPLE_SIZE = 300


def resolve_data(spec: str | Path) -> Path:
    """The file behind a data argument: an existing path, else a built-in dataset name.

    An existing path wins over a built-in name, so a local file is never shadowed.
    """
    path = Path(spec).expanduser()
    if path.is_file():
        return path
    builtin = BUILTIN_DATASETS.get(str(spec))
    if builtin is not None:
        return builtin.path
    if path.exists():
        raise DataError(path, "is not a file")
    known = ", ".join(BUILTIN_DATASETS)
    raise DataError(path, f"no such file, and not a built-in dataset (built-in: {known})")
