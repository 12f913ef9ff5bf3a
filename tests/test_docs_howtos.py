"""The how-to pages (``docs/howto/*.md``) run as tests, so a page cannot drift from the code.

How a page runs
---------------
Its fenced code blocks are taken in page order, in a fresh temporary directory (the page's
working directory, which is also put on ``sys.path``, as ``PYTHONPATH=.`` would for a user):

- ```` ```python ```` blocks run in one namespace per page;
- ```` ```console ````, ```` ```bash ```` and ```` ```shell ```` blocks: after joining ``\\``
  continuations, each line that starts with ``editprobe `` runs through the real command line,
  in-process (``cli_helpers.invoke``), and must exit with 0; ``export NAME=value`` sets an
  environment variable for the rest of the page, and ``NAME=value editprobe ...`` for that
  command only; any other line (``pip install``, ``ray start`` on other machines, comments)
  is not run;
- other blocks (yaml, json, text: what the reader should see) are not run.

Directives are HTML comments, which the rendered site does not show:

- ``<!-- test: file NAME -->`` right before a block: the block's text is written to NAME in
  the working directory (a YAML file, a dataset, a user's module) instead of being run;
- ``<!-- test: skip -->`` right before a block: the block is not run;
- ``<!-- test: output -->`` right before a block of what the reader should see: each of its
  lines (but ``...``) must be a line of what the previous block printed (a Python block's
  stdout, or a command's), in order. Only output that does not depend on numerics is marked.
- ``<!-- test: replace "OLD" with "NEW" -->``: OLD becomes NEW in every block of the page
  before anything runs. NEW may name the workspace this module builds: ``{model}`` (a trained
  tiny Llama saved with ``save_pretrained``), ``{facts}`` (a CounterFact file of its facts),
  ``{dev}`` (a disjoint CounterFact file for tuning), ``{negations}`` (a negation table for
  the facts' verb-less templates), ``{corpus}`` (a text file for C0),
  ``{address}`` (the head of a local Ray cluster). This is the one way a page's user-facing
  values (a model path, a 30-layer model's edit layers) become tiny ones, so every swap is
  written in the page's source, next to what it swaps.

Each test then checks what its page says the reader should see. Registries and the plug-in
modules a page defines are restored afterwards, so pages never leak into other tests.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import shlex
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch
from cli_helpers import CliResult, invoke
from ray_helpers import local_ray_head
from tiny_trained import save_workspace

from editprobe.data import DATASET_FORMATS
from editprobe.editing import METHODS
from editprobe.models import ADAPTERS
from editprobe.models.tiny import tiny_facts
from editprobe.probes import PROBES
from editprobe.probes.registry import DEFINITIONS

HOWTO = Path(__file__).resolve().parents[1] / "docs" / "howto"
PAGES = ("edit-your-model", "add-adapter", "add-method", "add-editor", "add-probe", "add-dataset-format",
         "ray-cluster", "tune-new-model")
SHELLS = ("console", "bash", "shell", "sh")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
                    re.S | re.M)
_DIRECTIVE = re.compile(r"<!--\s*test:\s*(?P<what>.*?)\s*-->", re.S)
_REPLACE = re.compile(r'replace\s+"(?P<old>(?:[^"\\]|\\.)*)"\s+with\s+"(?P<new>(?:[^"\\]|\\.)*)"$', re.S)


# --- reading a page ---------------------------------------------------------------------------

@dataclass
class Block:
    lang: str
    text: str
    line: int  # where it starts on the page (for messages)
    file: str | None = None  # <!-- test: file NAME -->
    skip: bool = False  # <!-- test: skip -->
    output: bool = False  # <!-- test: output -->


@dataclass
class Page:
    name: str
    blocks: list[Block]
    replacements: list[tuple[str, str]]


def _unescape(text: str) -> str:
    return text.replace('\\"', '"').replace("\\\\", "\\")


def read_page(name: str) -> Page:
    source = (HOWTO / f"{name}.md").read_text()
    blocks: list[Block] = []
    replacements: list[tuple[str, str]] = []
    pending: dict[str, object] = {}  # directives waiting for the next block
    pos = 0
    events = sorted([(m.start(), "directive", m) for m in _DIRECTIVE.finditer(source)] +
                    [(m.start(), "block", m) for m in _FENCE.finditer(source)], key=lambda e: e[0])
    for start, kind, match in events:
        if start < pos:  # a directive quoted inside a code block
            continue
        if kind == "directive":
            what = match["what"]
            replace = _REPLACE.match(what)
            if replace:
                replacements.append((_unescape(replace["old"]), _unescape(replace["new"])))
            elif what in ("skip", "output"):
                pending[what] = True
            elif what.startswith("file "):
                pending["file"] = what.removeprefix("file ").strip()
            else:
                raise ValueError(f"{name}.md: unknown test directive {what!r}")
            pos = match.end()
            continue
        between = source[pos:start].strip()
        if pending and between:
            raise ValueError(f"{name}.md: a test directive must come right before its block (line "
                             f"{source.count(chr(10), 0, start) + 1})")
        body = "\n".join(line[len(match["indent"]):] for line in match["body"].splitlines())
        info = match["info"].strip().split()
        blocks.append(Block(lang=info[0].lower() if info else "", text=body + "\n",
                            line=source.count("\n", 0, start) + 1, file=pending.get("file"),
                            skip=bool(pending.get("skip")), output=bool(pending.get("output"))))
        pending = {}
        pos = match.end()
    if pending:
        raise ValueError(f"{name}.md: a test directive at the end of the page has no block after it")
    return Page(name, blocks, replacements)


def shell_commands(text: str) -> list[str]:
    """The lines of a console block, ``\\`` continuations joined, comments and blanks dropped."""
    return join_commands(row[2:] if row.startswith("$ ") else row for row in text.splitlines())


def join_commands(rows) -> list[str]:
    """Shell lines as commands: ``\\`` continuations joined, comments and blanks dropped."""
    commands, current = [], ""
    for raw in rows:
        line = raw.rstrip()
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        current += line
        if current.strip() and not current.lstrip().startswith("#"):
            commands.append(current.strip())
        current = ""
    return commands


# --- running a page ---------------------------------------------------------------------------

@dataclass
class PageRun:
    """What running a page left: its namespace, its commands' results and its directory."""

    workdir: Path
    namespace: dict = field(default_factory=dict)
    commands: list[tuple[list[str], CliResult]] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    last_output: str = ""  # what the last Python block printed, or the last command's stdout

    def result(self, command: str, *args: str) -> CliResult:
        """The last result of ``editprobe COMMAND`` (with every ARG among its arguments)."""
        for argv, result in reversed(self.commands):
            if argv[0] == command and all(a in argv for a in args):
                return result
        raise AssertionError(f"the page ran no `editprobe {command}` with {args}")


_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")


def _run_shell(run: PageRun, command: str, monkeypatch, where: str) -> None:
    words = shlex.split(command, comments=True)
    if not words:
        return
    if words[0] == "export":
        for word in words[1:]:
            name, _, value = word.partition("=")
            monkeypatch.setenv(name, os.path.expandvars(value))
        return
    env: dict[str, str] = {}
    while words and _ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = os.path.expandvars(value)
    if not words or words[0] != "editprobe":
        return  # not ours to run (pip, ray start on other machines, cd, ...)
    args = [os.path.expandvars(w) for w in words[1:]]
    with monkeypatch.context() as mp:  # a per-command assignment lasts for that command
        for name, value in env.items():
            mp.setenv(name, value)
        result = invoke(args)
    run.commands.append((args, result))
    run.last_output = result.stdout
    assert result.exit_code == 0, f"{where}: `{command}` exited {result.exit_code}:\n{result.output}"


def check_output(expected: str, actual: str, where: str) -> None:
    """Every line of an output block (but a line ``...``, which stands for lines left out)
    is a line of what was printed, in the same order."""
    lines = [line.rstrip() for line in actual.splitlines()]
    at = 0
    for want in (line.rstrip() for line in expected.splitlines()):
        if not want or want == "...":
            continue
        try:
            at = lines.index(want, at) + 1
        except ValueError:
            raise AssertionError(f"{where}: the page shows {want!r}, but what ran printed:\n{actual}") from None


def _fill(text: str, ws: dict[str, str]) -> str:
    """``{name}`` of the workspace replaced; any other brace (a template's ``{}``) kept."""
    return re.sub(r"\{(\w+)\}", lambda m: ws.get(m[1], m[0]), text)


def run_page(name: str, ws: dict[str, str], workdir: Path, monkeypatch) -> PageRun:
    page = read_page(name)
    run = PageRun(workdir=workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    monkeypatch.chdir(workdir)
    monkeypatch.setenv("PWD", str(workdir))  # what $PWD means in the page's commands
    monkeypatch.syspath_prepend(str(workdir))
    for block in page.blocks:
        text = block.text
        for old, new in page.replacements:
            text = text.replace(old, _fill(new, ws))
        where = f"docs/howto/{name}.md line {block.line}"
        if block.skip:
            continue
        if block.output:
            check_output(text, run.last_output, where)
            continue
        if block.file is not None:
            path = workdir / block.file
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
            run.files.append(block.file)
        elif block.lang in ("python", "py"):
            try:
                printed = io.StringIO()
                with contextlib.redirect_stdout(printed):
                    exec(compile(text, where, "exec"), run.namespace)
                run.last_output = printed.getvalue()
            except Exception as exc:
                raise AssertionError(f"{where}: the Python block failed: {type(exc).__name__}: {exc}") from exc
        elif block.lang in SHELLS:
            for command in shell_commands(text):
                _run_shell(run, command, monkeypatch, where)
    return run


# --- the workspace the pages run against -------------------------------------------------------

def _counterfact(subjects: range, verb: str) -> list[dict]:
    """CounterFact records of the tiny model's "mother tongue" facts, each with one
    neighbourhood prompt (another subject of the same file). ``verb`` "": templates end with
    the subject, as the tiny model learned them (a 4-layer model reads the subject where the
    answer follows it, so only such templates can be edited); " is": templates the negation
    rules handle (tune needs them, it cannot take a negation table)."""
    facts = [f for f in tiny_facts() if f[0] == "The mother tongue of {}"]
    languages = sorted({o for _, _, o in facts})
    records = []
    for k, i in enumerate(subjects):
        template, subject, true = facts[i]
        neighbour = facts[subjects[(k + 1) % len(subjects)]]  # within the file: dev and eval stay disjoint
        records.append({
            "case_id": i,
            "requested_rewrite": {"prompt": template + verb, "subject": subject, "relation_id": "P103",
                                   "target_new": {"str": next(o for o in languages if o != true)},
                                   "target_true": {"str": true}},
            "paraphrase_prompts": [],
            "neighborhood_prompts": [neighbour[0].format(neighbour[1]) + verb],
        })
    return records


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """A trained tiny Llama saved to disk, CounterFact files of its facts, a corpus; the C0
    statistics cache is the module's own (shared by the pages: same model, same corpus)."""
    root = tmp_path_factory.mktemp("howto")
    torch.set_num_threads(1)
    save_workspace(root, steps=60)
    (root / "facts.json").write_text(json.dumps(_counterfact(range(8, 16), "")))
    (root / "dev.json").write_text(json.dumps(_counterfact(range(0, 8), " is")))
    (root / "negations.yaml").write_text('"The mother tongue of {}": "Not the mother tongue of {}"\n')
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITPROBE_CACHE", str(root / "cache"))
        yield {"root": str(root), "model": str(root / "model"), "facts": str(root / "facts.json"),
               "dev": str(root / "dev.json"), "negations": str(root / "negations.yaml"),
               "corpus": str(root / "corpus.txt")}


_REGISTRIES = (METHODS, ADAPTERS, DATASET_FORMATS, PROBES, DEFINITIONS)


@pytest.fixture
def page(ws, tmp_path, monkeypatch):
    """``page(name, **extra)`` runs a page; afterwards the registries, ``sys.modules`` and the
    environment are as they were."""
    saved = [dict(registry._items) for registry in _REGISTRIES]
    modules = set(sys.modules)
    monkeypatch.delenv("EDITPROBE_PLUGINS", raising=False)

    def run(name: str, **extra: str) -> PageRun:
        return run_page(name, {**ws, **extra}, tmp_path / name, monkeypatch)

    try:
        yield run
    finally:
        for registry, items in zip(_REGISTRIES, saved):
            registry._items = items
        for name in set(sys.modules) - modules:
            module = sys.modules[name]
            if str(tmp_path) in str(getattr(module, "__file__", "") or ""):
                del sys.modules[name]


# --- the pages --------------------------------------------------------------------------------

def test_every_page_is_tested_and_every_directive_reads():
    assert sorted(p.stem for p in HOWTO.glob("*.md")) == sorted(PAGES)
    for name in PAGES:
        page = read_page(name)
        assert page.blocks, name
        for old, _ in page.replacements:  # a replacement that matches nothing is stale
            assert any(old in b.text for b in page.blocks), f"{name}.md: replace {old!r} matches no block"
        text = (HOWTO / f"{name}.md").read_text()  # every page: when, steps, pitfalls
        assert "**When you need it:**" in text and "## Pitfalls" in text, name


def test_edit_your_model(page):
    run = page("edit-your-model")
    ns = run.namespace
    assert ns["model"].config.model_type == "llama" and ns["adapter"].n_layers(ns["model"]) == 4
    assert ns["after"] > ns["before"], "the Python edit did not make the new objects come out"
    assert "counterfact" in run.result("data", "inspect").output
    report = json.loads((run.workdir / "runs/my-edit/report.json").read_text())
    assert report["efficacy_after"] > report["efficacy_before"]
    assert report["hparams_file"]["chosen_by"] == "hparams" and report["hparams"]["layers"] == [1, 2]
    assert "PP efficacy" in run.result("edit").stdout
    summary = json.loads((run.workdir / "runs/my-run/summary.json").read_text())
    assert summary["datasets"] and (run.workdir / "runs/my-report").is_dir()
    assert "PP" in run.result("report").stdout


def test_add_adapter(page):
    assert "falcon" not in ADAPTERS
    run = page("add-adapter")
    ns = run.namespace
    assert ns["adapter"] is ADAPTERS["falcon"] and ns["adapter"].d_ff(ns["model"]) == 128
    assert ns["changed"] == ["transformer.h.1.mlp.dense_4h_to_h.weight", "transformer.h.2.mlp.dense_4h_to_h.weight"]
    assert ns["message"] == ("the 'falcon' adapter does not fit FalconForCausalLM: no module at "
                             "mlp_out='transformer.h.0.mlp.fc_out'; register a corrected ModelAdapter with "
                             "register_adapter()")
    report = json.loads((run.workdir / "runs/falcon-edit/report.json").read_text())
    assert report["n"] == 2 and report["batches"]


def test_add_method(page):
    assert "memit_capped" not in METHODS
    run = page("add-method")
    ns = run.namespace
    limit = ns["editor"].hp.max_update_norm
    assert limit == 0.05 and ns["report"].layers
    assert all(layer.update_norm <= limit * (1 + 1e-4) for layer in ns["report"].layers)
    report = json.loads((run.workdir / "runs/capped/report.json").read_text())
    assert report["method"] == "memit_capped" and report["hparams"]["max_update_norm"] == limit
    assert all(layer["update_norm"] <= limit * (1 + 1e-4) for batch in report["batches"] for layer in batch["layers"])
    summary = json.loads((run.workdir / "runs/capped-run/summary.json").read_text())
    assert [r["method"] for r in summary["results"]] == ["memit_capped"]


def test_add_editor(page):
    assert "recall" not in METHODS
    run = page("add-editor")
    ns = run.namespace
    assert ns["editor"].trained_forms() == frozenset() and ns["report"].n_requests == 2
    edit = json.loads((run.workdir / "runs/recall-edit/report.json").read_text())
    assert edit["method"] == "recall" and edit["hparams_file"]["file"].endswith("my-settings/recall.yaml")
    summary = json.loads((run.workdir / "runs/recall-vs-memit/summary.json").read_text())
    rows = {r["method"]: r for r in summary["results"]}
    assert list(rows) == ["recall", "memit"]  # beside MEMIT, on the same records
    assert rows["recall"]["hparams"] == {"method": "recall", "source": rows["recall"]["hparams"]["source"],
                                         "lead": "Fact:", "max_facts": 2}
    assert rows["recall"]["preserve_previous"] is None and rows["memit"]["preserve_previous"] is True
    assert set(rows["recall"]["edit_reports"]) == {"positive", "negative"}
    assert all(rows[m]["probes"]["negation"]["metrics"] for m in rows)
    report = run.result("report", "runs/recall-vs-memit").stdout
    assert "recall" in report and "memit" in report
    # Wrapping another toolkit's editor: beside MEMIT, its saved model evaluated again
    theirs = json.loads((run.workdir / "runs/theirs-vs-memit/summary.json").read_text())
    again = json.loads((run.workdir / "runs/theirs-again/summary.json").read_text())
    (row,) = [r for r in theirs["results"] if r["method"] == "their-ft"]
    (external,) = again["results"]
    assert external["method"] == "external" and external["variant"] == "facts__their-ft"
    for metric in ("PP", "PN"):
        assert external["probes"]["negation"]["metrics"][metric] == row["probes"]["negation"]["metrics"][metric]
    assert external["probes"]["efficacy"] == row["probes"]["efficacy"]
    assert "external+facts__their-ft" in run.result("report", "runs/theirs-again").stdout


def test_add_probe(page):
    run = page("add-probe")
    for out in ("runs/margin", "runs/margin-by-name"):
        summary = json.loads((run.workdir / out / "summary.json").read_text())
        (data,) = summary["datasets"].values()
        assert "target-margin" in data["probes"]
        before = data["no_edit"]["target-margin"]["metrics"]["margin"]["value"]
        (result,) = summary["results"]
        after = result["probes"]["target-margin"]["metrics"]["margin"]["value"]
        assert after > before, "the edit should move the margin towards the new object"
    assert "| target-margin margin |" in run.result("report").stdout


def test_add_dataset_format(page):
    run = page("add-dataset-format")
    loaded = run.namespace["loaded"]
    assert loaded.format == "fact-sheet" and len(loaded.records) == 3
    assert loaded.records[0].template == "The mother tongue of {} is" and loaded.records[2].target_true is None
    assert run.namespace["message"] == "broken.jsonl: record 1: field 'should_be': must not be empty"
    assert [(bad.index, bad.field) for bad in run.namespace["skipped"].skipped] == [(1, "should_be")]
    assert "fact-sheet" in run.result("data", "inspect").output
    report = json.loads((run.workdir / "runs/fact-sheet/report.json").read_text())
    assert report["n"] == 3


def test_tune_new_model(page, ws, monkeypatch):
    from editprobe.editing.settings import hparams as hparams_module
    from editprobe.editing.settings import model_keys as keys_model
    from editprobe.editing.settings.profiles import choose_hparams

    run = page("tune-new-model")
    tuned_path = run.workdir / "memit-my-model@counterfact.yaml"
    tuned = run.namespace["tuned"]
    assert tuned["method"] == "memit" and tuned["source"].startswith("editprobe tune")
    assert "# Result: trial" in tuned_path.read_text()
    report = json.loads((run.workdir / "runs/tuned-edit/report.json").read_text())
    assert report["hparams"]["layers"] == tuned["layers"]
    # Step 5, shipping: the page's commands need the file inside the package and a hub id, so
    # here the package's settings folder is a copy and the model's directory stands in.
    local = run.workdir / "hparams"
    shutil.copytree(hparams_module.HPARAMS_DIR, local)
    shutil.copy(tuned_path, local / "memit" / "my-model@counterfact.yaml")
    monkeypatch.setattr(hparams_module, "HPARAMS_DIR", local)
    monkeypatch.setitem(keys_model.KNOWN_MODELS, "my-org/my-model", "my-model")
    chosen = choose_hparams("memit", "my-org/my-model", dataset=ws["facts"])
    assert chosen.chosen_by == "tuned for counterfact"
    by_key = invoke(["edit", "--model", ws["model"], "--method", "memit", "--hparams",
                     "my-model@counterfact", "--data", ws["facts"], "--n", "2", "--batch-size", "2",
                     "--out", run.workdir / "runs/by-key"])
    assert by_key.exit_code == 0, by_key.output


@pytest.fixture
def ray_head(ws):
    """HOST:PORT of a 2-CPU Ray head on this machine (as tests/test_study_ray.py starts one),
    stopped by its pid afterwards; its workers see the module's statistics cache."""
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'editprobe[ray]')")
    env = {**os.environ, "EDITPROBE_CACHE": os.environ["EDITPROBE_CACHE"], "OMP_NUM_THREADS": "1"}
    with local_ray_head(env, prefix="ep-howto-") as address:
        yield address


@pytest.mark.timeout(600)
def test_ray_cluster(page, ray_head):
    run = page("ray-cluster", address=ray_head)
    study = run.result("study", "--backend")
    assert study.stdout.splitlines()[-1].startswith("all 2 runs finished")
    assert [line.split(": ")[1] for line in run.result("study", "--status").stdout.splitlines()] == ["finished"] * 2
    report = run.result("report").stdout
    assert "memit" in report and "alphaedit" in report


def test_a_plugin_module_that_cannot_be_imported_is_one_line(monkeypatch):
    monkeypatch.setenv("EDITPROBE_PLUGINS", "my_method, no_such_module_here")
    result = invoke(["data", "list"])
    assert result.exit_code == 2 and result.error_lines == [result.stderr.strip()]
    assert "EDITPROBE_PLUGINS: cannot import 'my_method'" in result.stderr and "PYTHONPATH" in result.stderr
