"""The tables as LaTeX that compiles: a ``table`` float with a booktabs ``tabular``, for
``\\input`` into a paper (preamble: ``\\usepackage{booktabs}``; any font encoding).

Every cell, header, caption and legend goes through :func:`escape`: the characters LaTeX
gives a meaning (``\\ { } $ & # % _ ^ ~``, and ``< > | " `` which the default OT1 font
encoding sets as other glyphs) are escaped; the symbols the tables use (−, –, ×, ᵀ, Greek
letters, arrows, superscripts ...) become LaTeX math or text commands; accented Latin
letters become accent commands; any other non-ASCII character, which pdflatex cannot set
without extra packages, is written as ``[U+XXXX]``. The output is plain ASCII.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Mapping, Sequence
from types import MappingProxyType

_ASCII = MappingProxyType({
    "\\": r"\textbackslash{}", "{": r"\{", "}": r"\}", "$": r"\$", "&": r"\&", "#": r"\#", "%": r"\%",
    "_": r"\_", "^": r"\textasciicircum{}", "~": r"\textasciitilde{}", "<": r"\textless{}",
    ">": r"\textgreater{}", "|": r"\textbar{}", '"': r"\texttt{\char34}", "`": r"\texttt{\char96}",
    "\t": " ", "\n": " ", "\r": " ",
})

_GREEK = ("alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta", "iota", "kappa", "lambda", "mu",
          "nu", "xi", "omicron", "pi", "rho", "final sigma", "sigma", "tau", "upsilon", "phi", "chi", "psi", "omega")
# Capitals LaTeX has a command for; the others look like Latin capitals.
_GREEK_CAPITALS = {"Gamma", "Delta", "Theta", "Lambda", "Xi", "Pi", "Sigma", "Upsilon", "Phi", "Psi", "Omega"}
_LATIN_CAPITALS = dict(zip("Alpha Beta Epsilon Zeta Eta Iota Kappa Mu Nu Omicron Rho Tau Chi".split(),
                           "A B E Z H I K M N O P T X".split()))


def _greek() -> dict[str, str]:
    out = {}
    for i, name in enumerate(_GREEK):
        small, capital = chr(0x3B1 + i), chr(0x391 + i)
        command = "varsigma" if name == "final sigma" else name
        out[small] = "o" if name == "omicron" else f"$\\{command}$"
        title = name.title()
        if name == "final sigma":
            continue  # U+03A2 is unassigned
        out[capital] = f"$\\{title}$" if title in _GREEK_CAPITALS else _LATIN_CAPITALS[title]
    out["µ"] = r"$\mu$"  # the micro sign
    return out


_SYMBOLS = MappingProxyType({
    "−": "$-$", "–": "--", "—": "---", "×": r"$\times$", "÷": r"$\div$", "±": r"$\pm$", "∓": r"$\mp$",
    "·": r"$\cdot$", "•": r"$\bullet$", "…": r"\ldots{}", "°": r"$^{\circ}$", "∞": r"$\infty$",
    "≈": r"$\approx$", "≠": r"$\neq$", "≤": r"$\leq$", "≥": r"$\geq$", "√": r"$\surd$", "∑": r"$\sum$",
    "→": r"$\rightarrow$", "←": r"$\leftarrow$", "↔": r"$\leftrightarrow$", "⇒": r"$\Rightarrow$",
    "⇐": r"$\Leftarrow$", "⇔": r"$\Leftrightarrow$", "↑": r"$\uparrow$", "↓": r"$\downarrow$",
    "ᵀ": r"$^{T}$", "⁺": "$^{+}$", "⁻": "$^{-}$", "ⁿ": "$^{n}$", "₊": "$_{+}$", "₋": "$_{-}$",
    **{chr(c): f"$^{{{d}}}$" for d, c in zip(range(10), (0x2070, 0xB9, 0xB2, 0xB3, *range(0x2074, 0x207A)))},
    **{chr(0x2080 + d): f"$_{{{d}}}$" for d in range(10)},
    "“": "``", "”": "''", "‘": "`", "’": "'", "«": "``", "»": "''", "„": ",,", "\u00a0": "~",
    "§": r"\S{}", "¶": r"\P{}", "©": r"\copyright{}", "ß": r"\ss{}", "æ": r"\ae{}", "Æ": r"\AE{}",
    "œ": r"\oe{}", "Œ": r"\OE{}", "ø": r"\o{}", "Ø": r"\O{}", "ł": r"\l{}", "Ł": r"\L{}", "ı": r"\i{}",
    "✓": r"$\surd$", "†": r"\dag{}", "‡": r"\ddag{}", "∧": r"$\wedge$", "€": "EUR", "£": r"\pounds{}",
    **_greek(),
})

# Combining marks that have an accent command in every font encoding.
_ACCENTS = MappingProxyType({"\u0300": "`", "\u0301": "'", "\u0302": "^", "\u0303": "~", "\u0304": "=",
                             "\u0306": "u", "\u0307": ".", "\u0308": '"', "\u030a": "r", "\u030b": "H",
                             "\u030c": "v", "\u0327": "c"})


def _accented(char: str) -> str | None:
    """An accented Latin letter as accent commands (é -> \\'{e}); None if it is not one."""
    base, *marks = unicodedata.normalize("NFD", char)
    if not (base.isascii() and base.isalpha()) or not marks or any(m not in _ACCENTS for m in marks):
        return None
    text = {"i": r"\i", "j": r"\j"}.get(base, base)  # dotless under an accent
    for mark in marks:
        text = f"\\{_ACCENTS[mark]}{{{text}}}"
    return text


def _char(char: str) -> str:
    if char in _ASCII:
        return _ASCII[char]
    if char.isascii():
        return char if char.isprintable() else " "
    return _SYMBOLS.get(char) or _accented(char) or f"[U+{ord(char):04X}]"


def escape(text: object) -> str:
    """``text`` as LaTeX text that sets as written (see the module's description)."""
    out = []
    text = str(text)
    for i, char in enumerate(text):
        out.append(_char(char))
        if char == "-" and text[i + 1:i + 2] == "-":
            out.append("{}")  # "--" would set an en dash
    return "".join(out)


def tabular_table(header: Sequence[str], rows: Sequence[Sequence[str]], spec: str, caption: str,
                  legend: Mapping[str, str] | None = None, caption_tex: str | None = None,
                  header_tex: Mapping[str, str] | None = None, notes: Sequence[str] = ()) -> str:
    """The float: ``caption`` (or ``caption_tex``, already LaTeX), the booktabs tabular of
    ``header`` (a column may be given as LaTeX in ``header_tex``) and ``rows`` (text), and
    the legend of the columns and the ``notes`` on its marks below it."""
    header_tex = header_tex or {}
    lines = [r"\begin{table}[t]", r"\centering", f"\\caption{{{caption_tex or escape(caption)}}}",
             f"\\begin{{tabular}}{{{spec}}}", r"\toprule",
             " & ".join(header_tex.get(c) or escape(c) for c in header) + r" \\", r"\midrule"]
    lines += [" & ".join(escape(v) for v in row) + r" \\" for row in rows]
    lines += [r"\bottomrule", r"\end{tabular}"]
    if legend or notes:
        lines += [r"\par\smallskip", r"{\footnotesize\raggedright"]
        lines += [f"\\textbf{{{escape(column)}}}: {escape(label)}\\par" for column, label in (legend or {}).items()]
        lines += [f"{escape(note)}\\par" for note in notes]
        lines.append("}")
    lines.append(r"\end{table}")
    return "\n".join(lines) + "\n"
