"""Checks of the ``str.format`` templates users write (hparams' ``kl_prompt``, negation
tables, the fact-check wording), so a bad brace fails when the file is read, not when the
template is first filled in the middle of a run.

``string.Formatter().parse`` is what ``str.format`` itself uses, so a template it accepts
here is one ``str.format`` accepts later.
"""

from __future__ import annotations

import string
from collections.abc import Collection

SUBJECT_SLOT = "{}"


def format_fields(template: str) -> list[str]:
    """The replacement fields of ``template`` as written (``""`` for ``{}``); a ValueError
    names an unbalanced brace, a conversion (``!r``) or a format spec (``:>9``)."""
    fields = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:  # "Single '}' encountered in format string" and the like
        raise ValueError(f"{template!r}: {exc} (write a literal brace as {{{{ or }}}})") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if spec or conversion:
            written = "{" + name + (f"!{conversion}" if conversion else "") + (f":{spec}" if spec else "") + "}"
            raise ValueError(f"{template!r}: {written} has a conversion or format spec; write the bare field")
        fields.append(name)
    return fields


def one_subject_slot(template: str) -> str:
    """``template`` when it holds exactly one ``{}`` (where the subject goes) and no other
    replacement field; else a ValueError saying what it holds."""
    fields = format_fields(template)
    others = sorted({"{" + f + "}" for f in fields if f != ""})
    if others:
        raise ValueError(f"{template!r} may hold only '{{}}' (where the subject goes), not {', '.join(others)}")
    if len(fields) != 1:
        raise ValueError(f"{template!r} must contain exactly one '{{}}' (where the subject goes), it has {len(fields)}")
    return template


def known_fields(template: str, allowed: Collection[str], required: Collection[str] = ()) -> str:
    """``template`` when every field is one of ``allowed`` (named) and each of ``required``
    occurs; else a ValueError naming the unknown or missing ones."""
    fields = format_fields(template)
    names = ", ".join("{" + a + "}" for a in allowed)
    unknown = sorted({"{" + f + "}" for f in fields if f not in allowed})
    if unknown:
        raise ValueError(f"{template!r} uses {', '.join(unknown)}; its placeholders are {names}")
    missing = ["{" + r + "}" for r in required if r not in fields]
    if missing:
        raise ValueError(f"{template!r} must contain {', '.join(missing)}")
    return template
