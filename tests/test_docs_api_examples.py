"""The API reference's examples run (docs/api/: mkdocstrings renders each docstring's
``Examples:`` section; nothing there executes them).

Every ``>>>`` example of the public objects below runs with doctest, each object's in its own
namespace and a fresh working directory, on tiny models (``editprobe.models.tiny``). A
snippet that needs a GPU, the network or a real model is a fenced code block in the
docstring instead, introduced as not run. The public objects must also document their
parameters and keep an example, so the reference cannot lose them quietly.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import re

import pytest

# The public API: the entry points docs/api/index.md names, and the Editor and Probe contracts.
DOCUMENTED = (
    "editprobe.models.load_model",
    "editprobe.data.load_records",
    "editprobe.editing.make_editor",
    "editprobe.editing.resolve_hparams",
    "editprobe.editing.api.Editor",
    "editprobe.probes.base.Probe",
    "editprobe.probes.base.register_probe",
    "editprobe.probes.base.resolve_probe",
    "editprobe.runs.config.RunConfig",
    "editprobe.runs.loop.run_experiment",
    "editprobe.studies.spec.load_study",
    "editprobe.studies.study.run_study",
    "editprobe.report.tables.load_summaries",
    "editprobe.report.tables.write_tables",
    "editprobe.evaluation.evaluate",
)
# Functions whose every parameter has an entry under Args/Parameters.
PARAMETERS_LISTED = tuple(p for p in DOCUMENTED if p.rsplit(".", 1)[1][0].islower())
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE | doctest.IGNORE_EXCEPTION_DETAIL


@pytest.fixture(autouse=True)
def _registries_restored():
    # An example registers a probe; later tests must not see it (as test_docs_howtos restores).
    from editprobe.probes import PROBES

    saved = dict(PROBES._items)
    yield
    PROBES._items = saved


def _resolve(path: str):
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def _examples(path: str) -> list[doctest.DocTest]:
    obj = _resolve(path)
    finder = doctest.DocTestFinder(recurse=inspect.isclass(obj), exclude_empty=True)
    return [t for t in finder.find(obj, path, globs={}) if t.examples and t.name.startswith(path)]


@pytest.mark.parametrize("path", DOCUMENTED)
def test_the_examples_run(path, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tests = _examples(path)
    doc = inspect.getdoc(_resolve(path)) or ""
    assert tests or "Examples:" in doc, f"{path}: no example in its docstring"
    runner = doctest.DocTestRunner(optionflags=_FLAGS)
    for test in tests:
        runner.run(test, out=lambda text: pytest.fail(f"{path}: an example fails\n{text}"))
    assert runner.summarize(verbose=False).failed == 0


@pytest.mark.parametrize("path", PARAMETERS_LISTED)
def test_every_parameter_is_documented(path):
    obj = _resolve(path)
    doc = inspect.getdoc(obj) or ""
    section = re.search(r"^(?:Args|Parameters):\n(.*?)(?:^\S|\Z)", doc, re.S | re.M)
    assert section, f"{path}: no Args section"
    listed = set(re.findall(r"^ {4}\**(\w+)(?: \([^)]*\))?:", section.group(1), re.M))
    wanted = {name for name in inspect.signature(obj).parameters if name not in ("self", "cls")}
    assert wanted <= listed, f"{path}: parameters not documented: {sorted(wanted - listed)}"
    assert "Returns:" in doc or inspect.signature(obj).return_annotation in (None, "None"), f"{path}: no Returns"
