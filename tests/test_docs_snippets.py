"""Every shell and Python block on every docs page (and README.md) runs here, or says why not.

The how-to pages (``docs/howto/``) run in tests/test_docs_howtos.py and are not walked here.
Every other page under ``docs/`` and README.md is, block by block, in page order:

Which fences run
----------------
- ```` ```python ```` (``py``): executed, one namespace per page;
- ```` ```bash ````, ``sh``, ``shell``, ``console``: each command executed (``\\`` continuations
  joined; in a block with ``$ `` prompts only the prompted lines are commands, the rest is
  the output shown). A command must be ``editprobe ...`` (also ``.venv/bin/editprobe``,
  optionally after ``NAME=value``) or ``export NAME=value``: it runs through the real command
  line, in-process, and must exit 0. Any other command (``make``, ``pip``, ``python -m ...``)
  or an elided one (an argument ``...``) cannot run here, so its block must be marked;
- any other language (``text``, ``yaml``, ``json``, ``mermaid``, ...): what the reader should
  see or write to a file; not executed;
- a fence without a language fails: say what the block is.

Marking a block as not run
--------------------------
``<!-- not-run: REASON -->`` on the line right before the fence; REASON must say why (needs a
GPU, needs the network, needs the built-in model and about N minutes, an elided sketch, ...).
A marker without a reason, or one that is not right before a fence, fails.

Tiny stand-ins (the substitution table)
---------------------------------------
Blocks run on the trained 4-layer tiny Llama of tests/tiny_trained.py and 8 CounterFact
records of its facts, never the built-in model, so the whole module stays within about three
minutes on two cores. Before a block runs:

- shell: ``--model smollm2-135m`` and ``--original smollm2-135m`` become the tiny model,
  ``--data counterfact-sample`` its facts, ``--n`` and ``--batch-size`` are capped at 2; the
  commands that load a model (``edit``, ``run``, ``tune``, ``trace``, ``analyze``; not with
  ``--resume``/``--config``) get the tiny model and its facts when they name none, and
  ``edit``, ``run`` and ``analyze`` ``--hparams tiny`` unless the block names hparams;
  ``evaluate`` gets ``--original`` the tiny model and ``--data`` its facts when it names none;
- Python: ``load_model("smollm2-135m")`` loads the tiny model, any other ``"smollm2-135m"``
  (``make_editor``'s model key) becomes ``"tiny"``, ``"counterfact-sample"`` the facts file;
  a page's namespace starts with what the API example defines (``model, tok, adapter`` of the
  tiny model, ``records``, ``requests``, ``batches``, ``make_editor``), so a method page's
  fragment runs as it would after that example;
- a page may add its own swaps: ``<!-- test: replace "OLD" with "NEW" -->`` (NEW may name
  ``{model}`` or ``{facts}``), as the how-to pages do; ``<!-- test: file NAME -->`` right
  before a block writes it to NAME in the page's working directory instead of running it.
"""

from __future__ import annotations

import contextlib
import io
import json
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from cli_helpers import invoke
from test_docs_howtos import _counterfact, join_commands
from tiny_trained import save_workspace

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PYTHON = ("python", "py")
SHELLS = ("bash", "sh", "shell", "console")

_FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)\n(?P<body>.*?)^(?P=indent)(?P=fence)[ \t]*$",
                    re.S | re.M)
_NOT_RUN = re.compile(r"^<!--\s*not-run:(?P<reason>.*?)-->$")
_MARKER_ANYWHERE = re.compile(r"<!--\s*not-run\b")
_DIRECTIVE = re.compile(r"<!--\s*test:\s*(?P<what>.*?)\s*-->", re.S)
_REPLACE = re.compile(r'replace\s+"(?P<old>(?:[^"\\]|\\.)*)"\s+with\s+"(?P<new>(?:[^"\\]|\\.)*)"$', re.S)


def pages() -> list[Path]:
    found = [p for p in sorted(DOCS.rglob("*.md")) if "howto" not in p.relative_to(DOCS).parts[:1]]
    return [*found, ROOT / "README.md"]


def _name(path: Path) -> str:
    return str(path.relative_to(ROOT))


# --- reading a page ---------------------------------------------------------------------------

@dataclass
class Block:
    lang: str
    text: str
    line: int
    not_run: str | None  # the marker's reason ("" when the marker has none)
    file: str | None  # <!-- test: file NAME -->


def read_blocks(path: Path) -> tuple[list[Block], list[tuple[str, str]], list[str]]:
    """The page's fenced blocks, its replacements, and what is wrong with its markers."""
    source = path.read_text()
    lines = source.splitlines()
    blocks, problems = [], []
    marker_lines: set[int] = set()
    for match in _FENCE.finditer(source):
        line = source.count("\n", 0, match.start()) + 1
        info = match["info"].strip().split()
        before = lines[line - 2].strip() if line >= 2 else ""
        marker = _NOT_RUN.match(before)
        if marker:
            marker_lines.add(line - 1)
        file_directive = _DIRECTIVE.fullmatch(before)
        file = None
        if file_directive and file_directive["what"].startswith("file "):
            file = file_directive["what"].removeprefix("file ").strip()
        body = "\n".join(row[len(match["indent"]):] for row in match["body"].splitlines())
        blocks.append(Block(lang=info[0].lower() if info else "", text=body + "\n", line=line,
                            not_run=marker["reason"].strip() if marker else None, file=file))
    for number, row in enumerate(lines, 1):  # a marker must sit right before a fence
        if _MARKER_ANYWHERE.match(row.strip()) and number not in marker_lines and not _inside_block(source, number):
            problems.append(f"line {number}: a not-run marker that is not on the line right before a fence "
                            f"(or not spelled `<!-- not-run: REASON -->`)")
    replacements = []
    for match in _DIRECTIVE.finditer(source):
        if not _line_of(source, match.start()).lstrip().startswith("<!--"):
            continue  # quoted in the prose (inline code), not a directive
        if _inside_block(source, source.count("\n", 0, match.start()) + 1):
            continue
        replace = _REPLACE.match(match["what"])
        if replace:
            replacements.append((replace["old"].replace('\\"', '"'), replace["new"].replace('\\"', '"')))
        elif not match["what"].startswith("file "):
            problems.append(f"unknown test directive {match['what']!r} (here: replace, file; or not-run: REASON)")
    return blocks, replacements, problems


def _line_of(source: str, at: int) -> str:
    start = source.rfind("\n", 0, at) + 1
    end = source.find("\n", at)
    return source[start:end if end >= 0 else len(source)]


def _inside_block(source: str, line: int) -> bool:
    for match in _FENCE.finditer(source):
        first = source.count("\n", 0, match.start()) + 1
        last = source.count("\n", 0, match.end()) + 1
        if first < line < last:
            return True
    return False


def shell_commands(text: str) -> list[str]:
    """The commands of a shell block: ``\\`` continuations joined, comments and blanks dropped;
    with ``$ `` prompts, only the prompted lines."""
    rows = text.splitlines()
    if any(row.startswith("$ ") for row in rows):
        rows = [row[2:] for row in rows if row.startswith("$ ")]
    return join_commands(rows)


# --- the tiny stand-ins -----------------------------------------------------------------------

LOADS_A_MODEL = ("edit", "run", "tune", "trace", "analyze")
CAPPED = {"--n": 2, "--batch-size": 2}


def _option(args: list[str], name: str) -> int | None:
    return args.index(name) if name in args else None


def tiny_args(args: list[str], ws: dict[str, str]) -> list[str]:
    """The substitution table for a command line (see the module's docstring)."""
    args = list(args)
    command = args[0] if args else ""
    for name, cap in CAPPED.items():
        at = _option(args, name)
        if at is not None and args[at + 1].isdigit():
            args[at + 1] = str(min(int(args[at + 1]), cap))
    for name, builtin, tiny in (("--model", "smollm2-135m", ws["model"]), ("--original", "smollm2-135m", ws["model"]),
                                ("--data", "counterfact-sample", ws["facts"])):
        args = [tiny if (a == builtin and i and args[i - 1] == name) else a for i, a in enumerate(args)]
    if command in LOADS_A_MODEL and "--resume" not in args and "--config" not in args:
        if "--model" not in args:
            args += ["--model", ws["model"]]
        if "--data" not in args:
            args += ["--data", ws["facts"]]
        if "--hparams" not in args and command in ("edit", "run", "analyze"):
            args += ["--hparams", "tiny"]
    if command == "evaluate":
        if "--original" not in args:
            args += ["--original", ws["model"]]
        if "--data" not in args:
            args += ["--data", ws["facts"]]
    return args


def tiny_python(text: str, ws: dict[str, str]) -> str:
    text = text.replace('load_model("smollm2-135m")', f"load_model({ws['model']!r})")
    text = text.replace('"smollm2-135m"', '"tiny"')
    return text.replace('"counterfact-sample"', repr(ws["facts"]))


# --- running a page ---------------------------------------------------------------------------

_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=")
_EDITPROBE = ("editprobe", ".venv/bin/editprobe")


def run_command(command: str, ws: dict[str, str], monkeypatch, where: str) -> None:
    words = shlex.split(command, comments=True)
    if words and words[0] == "export":
        for word in words[1:]:
            name, _, value = word.partition("=")
            monkeypatch.setenv(name, value)
        return
    env = {}
    while words and _ASSIGNMENT.match(words[0]):
        name, _, value = words.pop(0).partition("=")
        env[name] = value
    if not words or words[0] not in _EDITPROBE:
        raise AssertionError(f"{where}: `{command}` is not an editprobe command and cannot run here: "
                             "mark the block `<!-- not-run: REASON -->`")
    if "..." in words:
        raise AssertionError(f"{where}: `{command}` is elided (`...`): mark the block `<!-- not-run: REASON -->`")
    args = tiny_args(words[1:], ws)
    with monkeypatch.context() as mp:
        for name, value in env.items():
            mp.setenv(name, value)
        result = invoke(args)
    assert result.exit_code == 0, f"{where}: `{command}` (run as `editprobe {shlex.join(args)}`) " \
                                  f"exited {result.exit_code}:\n{result.output[-3000:]}"


def run_python(text: str, namespace: dict, where: str) -> None:
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            exec(compile(text, where, "exec"), namespace)
    except Exception as exc:
        raise AssertionError(f"{where}: the Python block failed: {type(exc).__name__}: {exc}") from exc


def _prelude(ws: dict[str, str]) -> dict:
    """What the API example defines, on the tiny model: the namespace a page's Python starts with."""
    from editprobe.data import load_records
    from editprobe.editing import make_editor
    from editprobe.models import load_model

    model, tok, adapter = load_model(ws["model"])
    records = load_records(ws["facts"]).records
    requests = [r.request() for r in records]
    return {"__name__": "__docs__", "model": model, "tok": tok, "adapter": adapter, "records": records,
            "requests": requests, "batches": [requests[:4], requests[4:]], "make_editor": make_editor}


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    """The tiny model saved to disk and 8 CounterFact records of its facts (templates with a
    verb, so the negation rules can build the opposite query); the module's own C0 cache."""
    root = tmp_path_factory.mktemp("snippets")
    torch.set_num_threads(1)
    save_workspace(root, steps=60)
    (root / "facts.json").write_text(json.dumps(_counterfact(range(0, 8), " is")))
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITPROBE_CACHE", str(root / "cache"))
        yield {"root": str(root), "model": str(root / "model"), "facts": str(root / "facts.json")}


def _fill(text: str, ws: dict[str, str]) -> str:
    """``{name}`` of the workspace replaced; any other brace (a template's ``{}``) kept."""
    return re.sub(r"\{(\w+)\}", lambda m: ws.get(m[1], m[0]), text)


def _no_builtin_model(name: str):
    raise AssertionError(f"a docs block loads the built-in model {name!r}: give it the tiny stand-in "
                         "(the substitution table) or mark the block `<!-- not-run: REASON -->`")


def _executable(block: Block) -> bool:
    return block.lang in PYTHON + SHELLS


# --- the tests --------------------------------------------------------------------------------

def test_every_block_is_run_marked_or_not_executable():
    problems = []
    for path in pages():
        blocks, replacements, page_problems = read_blocks(path)
        problems += [f"{_name(path)}: {p}" for p in page_problems]
        for block in blocks:
            where = f"{_name(path)} line {block.line}"
            if not block.lang:
                problems.append(f"{where}: a fence without a language: name it (python, bash, text, yaml, ...)")
            if block.not_run is not None and not block.not_run:
                problems.append(f"{where}: a not-run marker without a reason")
            if block.not_run is not None and not _executable(block):
                problems.append(f"{where}: a not-run marker on a {block.lang or 'plain'} block, which never runs")
        for old, _ in replacements:
            assert any(old in b.text for b in blocks), f"{_name(path)}: replace {old!r} matches no block"
    assert not problems, "\n".join(problems)


def _runnable_pages() -> list[Path]:
    return [p for p in pages() if any(_executable(b) and b.not_run is None and b.lang for b in read_blocks(p)[0])]


@pytest.mark.parametrize("path", _runnable_pages(), ids=_name)
def test_page_runs(path, ws, tmp_path, monkeypatch):
    from editprobe.data import DATASET_FORMATS
    from editprobe.editing import METHODS
    from editprobe.models.adapters import ADAPTERS
    from editprobe.probes import PROBES
    from editprobe.probes.registry import DEFINITIONS
    from editprobe.studies.backends.base import BACKENDS

    registries = (METHODS, DATASET_FORMATS, PROBES, DEFINITIONS, BACKENDS, ADAPTERS)  # a page may register into any
    saved = [dict(registry._items) for registry in registries]
    blocks, replacements, _ = read_blocks(path)
    monkeypatch.setattr("editprobe.models.loading.pull", _no_builtin_model)  # never the real model
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    namespace = None
    try:
        for block in blocks:
            if block.not_run is not None or not (_executable(block) or block.file):
                continue
            text = block.text
            for old, new in replacements:
                text = text.replace(old, _fill(new, ws))
            where = f"{_name(path)} line {block.line}"
            if block.file:
                (tmp_path / block.file).parent.mkdir(parents=True, exist_ok=True)
                (tmp_path / block.file).write_text(text)
            elif block.lang in PYTHON:
                namespace = namespace if namespace is not None else _prelude(ws)
                run_python(tiny_python(text, ws), namespace, where)
            else:
                for command in shell_commands(text):
                    run_command(command, ws, monkeypatch, where)
    finally:
        for registry, items in zip(registries, saved):
            registry._items = items
        sys.modules.pop("__docs__", None)
