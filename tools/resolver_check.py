"""Does editprobe install beside lm-eval and TransformerLens? (`make resolver-check`)

Asks pip to resolve the package (this checkout) together with the other tools, in a
throw-away venv and with ``--dry-run``: nothing is installed anywhere. Needs the network
(PyPI); downloads package metadata and, where an index serves no metadata file, wheels.
Prints the versions pip chose for the shared dependencies, or pip's conflict, and exits with
pip's status.

    python tools/resolver_check.py [EXTRA_REQUIREMENT ...]   # default: lm-eval transformer-lens
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
OTHERS = ("lm-eval", "transformer-lens")
SHOWN = ("editprobe", "lm-eval", "transformer-lens", "torch", "transformers", "tokenizers", "accelerate",
         "numpy", "pandas", "scipy", "scikit-learn", "pydantic", "typer", "rich", "datasets", "safetensors")


def main(argv: list[str]) -> int:
    others = argv or list(OTHERS)
    with tempfile.TemporaryDirectory(prefix="editprobe-resolver-") as tmp:
        env_dir = Path(tmp) / "venv"
        venv.create(env_dir, with_pip=True)
        report = Path(tmp) / "report.json"
        cmd = [str(env_dir / "bin" / "python"), "-m", "pip", "install", "--dry-run", "--ignore-installed",
               "--quiet", "--report", str(report), str(ROOT), *others]
        print("$", " ".join(cmd[2:]), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(done.stdout[-4000:] + done.stderr[-4000:])
            print(f"resolver check: FAILED (pip exit {done.returncode}): editprobe and {', '.join(others)} "
                  "do not resolve together")
            return done.returncode
        chosen = {item["metadata"]["name"].lower().replace("_", "-"): item["metadata"]["version"]
                  for item in json.loads(report.read_text())["install"]}
    for name in SHOWN:
        if name in chosen:
            print(f"  {name}=={chosen[name]}")
    print(f"resolver check: OK, {len(chosen)} distributions resolve together with {', '.join(others)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
