"""``editprobe report``'s .tex tables compile, whatever the runs hold: names with every
LaTeX special character (``_ # % & { } $ ^ ~ \\`` and ``< > | " ` --``), non-ASCII names,
the symbols the tables themselves use (−, –, ×, ᵀ, λ, ±, →, ²), the ablation table (K_p) and
a legend.

Two checks: the escape check always runs (every .tex is ASCII, each line is table structure
or cells whose every token is an escape, a known command, plain text or a math group of
known symbols, and escaping round-trips printable ASCII); the compile check runs pdflatex
once on a document holding every table, and skips when pdflatex or booktabs is missing
(``make latex`` installs them: texlive-latex-base, texlive-latex-recommended).
"""

from __future__ import annotations

import json
import re
import shutil
import string
import subprocess
from pathlib import Path

import pytest

from editprobe.report import load_summaries, write_tables
from editprobe.report.latex import escape

SPECIALS = r"_ # % & { } $ ^ ~ \ < > | \" ` --"
MODEL = r"my_model #1 {v2} ~/models\tiny"
DATASETS = (f"cf {SPECIALS}", "zsRE naïve “Ωmega” 事实 λ²")
METHODS = ("memit", "alpha_edit&co")


def _metric(value, label, unit="%", n=40):
    return {"value": value, "n": n, "label": label, "unit": unit}


def _outcome(probe, table, values, label, unit="%"):
    return {"probe": probe, "version": 1, "table": table,
            "metrics": {k: _metric(v, f"{label} {k}", unit) for k, v in values.items()}}


NEGATION = {"PP": 98.2, "PN": 69.4, "NN": 97.8, "NP": 81.5, "PP-PN": 28.8, "PP-NP": 16.7, "NN-PN": 28.4,
            "NN-NP": 16.3, "Avg": 22.6}
CLASSIC_LABEL = "teacher-forced: mean p(o*) − p(o) ± 1σ, λ·K_pK_pᵀ → 10² × “points” (≈ ≤ ≥ …) 50% of {a_b}"


def _summary(preserve: bool) -> dict:
    """A schema-1 summary whose every name and label is as awkward as a user's could be."""
    classic = {"efficacy": _outcome("efficacy", "classic", {"prob": 99.0, "magnitude": -3.1}, CLASSIC_LABEL),
               "perplexity": _outcome("perplexity", "classic", {"ppl": 21.37}, "exp(−NLL) ~ $ & #", "ppl")}
    return {
        "schema_version": 1, "config": {"model": MODEL}, "model_dtype": "float32",
        "datasets": {dk: {"n_records": 10, "no_edit": {
            "negation": _outcome("negation", "negation", {"PP": 100.0, "PN": 15.4, "PP-PN": 84.6, "Avg": 84.6},
                                 "n"),
            "factcheck": _outcome("factcheck", "factcheck", {"Eff": 100.0, "Acc": 91.1}, "fc"),
            **classic}} for dk in DATASETS},
        "results": [{"dataset": dk, "method": m, "variant": "defend_#1" if m == "memit" else None,
                     "preserve_previous": preserve, "probes": {
                         "negation": _outcome("negation", "negation", NEGATION, "n"),
                         "factcheck": _outcome("factcheck", "factcheck", {"Eff": 98.2, "Acc": 64.6, "Control": None},
                                               "fc"),
                         **classic},
                     "hparams_file": {"file": "hparams/memit_~me/$HOME & 100%.yaml", "chosen_by": "profile {x}"},
                     "c0": {"corpus": "wiki_text#2 ^ ~", "asked": 100, "documents": {"4": 100}}}
                    for dk in DATASETS for m in METHODS],
        "timings": {"batches": {f"{DATASETS[0]}__memit__positive": {"0": 2.0}},
                    "probes": {f"{DATASETS[0]}__baseline": {"negation": 1.0}}},
    }


@pytest.fixture(scope="module")
def tex_files(tmp_path_factory) -> list[Path]:
    root = tmp_path_factory.mktemp("latex")
    runs = []
    for name, preserve in (("with", True), ("without", False)):
        (root / name).mkdir()
        (root / name / "summary.json").write_text(json.dumps(_summary(preserve)))
        runs.append(root / name)
    out = root / "tables"
    write_tables(load_summaries(runs), out)
    files = sorted(out.glob("*.tex"))
    assert {p.stem for p in files} == {"negation", "factcheck", "ablation", "classic", "cost", "settings"}
    return files


# --- the escape check (always) ---------------------------------------------------------------------

STRUCTURE = {r"\begin{table}[t]", r"\centering", r"\toprule", r"\midrule", r"\bottomrule", r"\end{tabular}",
             r"\end{table}", r"\par\smallskip", r"{\footnotesize\raggedright", "}"}
MATH_COMMANDS = {"times", "div", "pm", "mp", "cdot", "bullet", "circ", "infty", "approx", "neq", "leq", "geq",
                 "surd", "sum", "rightarrow", "leftarrow", "leftrightarrow", "Rightarrow", "Leftarrow",
                 "Leftrightarrow", "uparrow", "downarrow", "top", "mu", "varsigma", "alpha", "beta", "gamma",
                 "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "nu", "xi", "pi", "rho",
                 "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega", "Gamma", "Delta", "Theta", "Lambda", "Xi",
                 "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega"}
TOKEN = re.compile("|".join([
    r"\\[{}$&#%_]",  # an escaped special character
    r"\\text(?:backslash|asciicircum|asciitilde|less|greater|bar)\{\}",
    r"\\texttt\{\\char(?:34|96)\}",  # " and `
    r"\\(?:ldots|ss|ae|AE|oe|OE|o|O|l|L|i|S|P|copyright|pounds)\{\}",
    r"\\[`'^~=u.\"Hvcr]\{(?:\\[ij]|[A-Za-z])\}",  # an accented letter
    r"\$[^$]+\$",  # math, checked below
    r"-\{\}",  # a hyphen that must not join the next one into a dash
    r"`",  # an opening quote (of “ or ‘; a backtick is \char96)
    r"\[U\+[0-9A-F]{4,6}\]",  # a character pdflatex cannot set
    r"[^\\{}$&#%_^~<>|\"`]",  # plain text
]))


def _check_text(text: str, where: str) -> None:
    """``text`` is escaped text: a sequence of known tokens, and math only of known symbols."""
    pos = 0
    while pos < len(text):
        match = TOKEN.match(text, pos)
        assert match, f"{where}: unescaped or unknown LaTeX at {text[pos:pos + 30]!r} in {text!r}"
        token = match.group()
        if token.startswith("$"):
            body = token[1:-1]
            assert re.fullmatch(r"[-+^_{}0-9A-Za-z\\ ]+", body), f"{where}: math {token!r}"
            commands = set(re.findall(r"\\([A-Za-z]+)", body))
            assert commands <= MATH_COMMANDS, f"{where}: math {token!r} uses {commands - MATH_COMMANDS}"
        pos = match.end()


def _cells(line: str) -> list[str]:
    assert line.endswith(r" \\"), line
    return re.split(r"(?<!\\) & ", line[: -len(r" \\")])


@pytest.fixture(scope="module")
def checked(tex_files) -> list[Path]:
    for path in tex_files:
        text = path.read_text()
        assert text.isascii(), f"{path.name}: {sorted({c for c in text if not c.isascii()})} cannot be set by pdflatex"
        lines = text.splitlines()
        spec = re.fullmatch(r"\\begin\{tabular\}\{([lr]+)\}", lines[3])
        assert spec and lines[2].startswith(r"\caption{") and lines[2].endswith("}"), path.name
        _check_text(lines[2][len(r"\caption{"):-1], f"{path.name} caption")
        in_legend = False
        for line in lines[4:]:
            if line in STRUCTURE:
                in_legend |= line == r"{\footnotesize\raggedright"
            elif in_legend:
                legend = re.fullmatch(r"\\textbf\{(.*?)\}: (.*)\\par", line)
                assert legend, f"{path.name}: {line!r}"
                _check_text(legend.group(1), f"{path.name} legend")
                _check_text(legend.group(2), f"{path.name} legend")
            else:
                cells = _cells(line)
                assert len(cells) == len(spec.group(1)), f"{path.name}: {line!r}"
                for cell in cells:
                    if cell != "$K_p$":  # the ablation table's header, as math
                        _check_text(cell, path.name)
    return tex_files


def test_every_table_is_escaped_ascii(checked):
    names = {p.stem: p.read_text() for p in checked}
    assert r"\caption{With and without the preserved keys $K_p K_p^{\top}$}" in names["ablation"]
    assert r"cf \_ \# \% \& \{ \} \$ \textasciicircum{} \textasciitilde{} \textbackslash{} \textless{}" in (
        names["negation"])
    assert r"PP$-$PN" in names["negation"] and "[U+4E8B]" in names["negation"]  # 事
    assert r"na\"{\i}ve" in names["negation"]
    assert r"$^{T}$" in names["classic"] and r"$\pm$" in names["classic"]  # ᵀ, ± in the legend


UNESCAPE = [(r"\textbackslash{}", "\\"), (r"\textasciicircum{}", "^"), (r"\textasciitilde{}", "~"),
            (r"\textless{}", "<"), (r"\textgreater{}", ">"), (r"\textbar{}", "|"), (r"\texttt{\char34}", '"'),
            (r"\texttt{\char96}", "`"), ("-{}", "-")] + [("\\" + c, c) for c in "{}$&#%_"]


def _unescape(tex: str) -> str:
    out, pos = [], 0
    while pos < len(tex):
        for escaped, char in UNESCAPE:
            if tex.startswith(escaped, pos):
                out.append(char)
                pos += len(escaped)
                break
        else:
            out.append(tex[pos])
            pos += 1
    return "".join(out)


def test_escaping_round_trips_every_printable_ascii_character():
    text = "".join(c for c in string.printable if c not in "\t\n\r\x0b\x0c") + " --- a--b"
    _check_text(escape(text), "escape")
    assert _unescape(escape(text)) == text


@pytest.mark.parametrize("char", ["ᵀ", "−", "±", "–", "λ", "→", "²", "é", "ß", "事", "😀"])
def test_a_symbol_becomes_ascii_latex(char):
    tex = escape(f"x{char}y")
    assert tex.isascii()
    _check_text(tex, char)


# --- the compile check (where pdflatex is installed) -----------------------------------------------


def test_the_tables_compile_with_pdflatex(checked, tmp_path):
    pdflatex = shutil.which("pdflatex")
    kpsewhich = shutil.which("kpsewhich")
    booktabs = kpsewhich and subprocess.run([kpsewhich, "booktabs.sty"], capture_output=True, text=True).stdout
    if not (pdflatex and booktabs):
        pytest.skip("pdflatex or booktabs.sty not installed (make latex installs texlive-latex-base and "
                    "texlive-latex-recommended); the escape check ran")
    for path in checked:
        shutil.copy(path, tmp_path / path.name)
    inputs = "".join(f"\\input{{{p.name}}}\n\\clearpage\n" for p in checked)
    (tmp_path / "doc.tex").write_text("\\documentclass{article}\n\\usepackage{booktabs}\n\\begin{document}\n"
                                      f"{inputs}\\end{{document}}\n")
    done = subprocess.run([pdflatex, "-interaction=nonstopmode", "-halt-on-error", "-no-shell-escape", "doc.tex"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120)
    log = (tmp_path / "doc.log").read_text(errors="replace")
    problems = [line for line in log.splitlines() if line.startswith("!") or "Missing character" in line]
    assert done.returncode == 0 and not problems, "\n".join(problems) or done.stdout[-3000:]
    assert (tmp_path / "doc.pdf").stat().st_size > 0
