"""How the shipped data files were made (data/builtin/ATTRIBUTION.md): the maintainer's
builders, run once per file, above both the catalogue (builtin_data.py) and the loaders.

``python -m editprobe.data.builders wikitext WIKITEXT2_DIR OUT`` regenerates the built-in
WikiText-2 sample.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..paths import write_text_atomic
from .builtin_data import COUNTERFACT_SAMPLE_SIZE
from .errors import DataError
from .loading import load_records
from .wikitext import WIKITEXT_SPLITS, wikitext_documents


def build_sample(source: str | Path, out: str | Path, n: int = COUNTERFACT_SAMPLE_SIZE) -> Path:
    """Write the first ``n`` records of a JSON-array dataset unchanged, one record per line
    (how the built-in counterfact-sample and zsre-sample were made)."""
    source = Path(source)
    records = json.loads(source.read_text(encoding="utf-8"))
    if not isinstance(records, list) or len(records) < n:
        raise DataError(source, f"expected a JSON array of at least {n} records")
    body = ",\n".join(json.dumps(r, ensure_ascii=False) for r in records[:n])
    write_text_atomic(out, f"[\n{body}\n]\n")
    return Path(out)


# The name the counterfact sample was first built with; kept for scripts that call it.
build_counterfact_sample = build_sample


def build_disjoint_sample(source: str | Path, out: str | Path, n: int, exclude: tuple[str, ...]) -> Path:
    """Write, unchanged, the first ``n`` entries of a JSON-array dataset whose subject and
    prompt (with its subject) appear in none of the ``exclude`` datasets (how the built-in
    counterfact-train was made, excluding counterfact-sample and zsre-sample)."""
    def key(text: str) -> str:
        return " ".join(text.lower().split())

    source = Path(source)
    entries = json.loads(source.read_text(encoding="utf-8"))
    records = load_records(source).records
    if len(records) != len(entries):
        raise DataError(source, "some entries do not load as records; cannot keep the file's entries unchanged")
    excluded = [r for spec in exclude for r in load_records(spec).records]
    subjects, prompts = {key(r.subject) for r in excluded}, {key(r.query) for r in excluded}
    kept = [e for e, r in zip(entries, records) if key(r.subject) not in subjects and key(r.query) not in prompts]
    if len(kept) < n:
        raise DataError(source, f"only {len(kept)} entries are disjoint from {', '.join(exclude)}; {n} asked")
    body = ",\n".join(json.dumps(e, ensure_ascii=False) for e in kept[:n])
    write_text_atomic(out, f"[\n{body}\n]\n")
    return Path(out)


def build_wikitext_sample(source_dir: str | Path, out: str | Path) -> Path:
    """Write ``valid.txt`` + ``test.txt`` of ``source_dir`` as documents separated by blank lines."""
    source_dir = Path(source_dir)
    docs: list[str] = []
    for split in WIKITEXT_SPLITS:
        path = source_dir / split
        if not path.is_file():
            raise DataError(path, "no such file (expected the tokenized WikiText-2 split)")
        docs.extend(wikitext_documents(path.read_text(encoding="utf-8").splitlines()))
    write_text_atomic(out, "\n\n".join(docs) + "\n")
    return Path(out)

if __name__ == "__main__":  # pragma: no cover - maintenance entry point
    if len(sys.argv) != 4 or sys.argv[1] != "wikitext":
        sys.exit("usage: python -m editprobe.data.builders wikitext WIKITEXT2_DIR OUT.txt")
    print(build_wikitext_sample(sys.argv[2], sys.argv[3]))
