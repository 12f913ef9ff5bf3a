"""The one way editprobe reads YAML: PyYAML's SafeLoader, with limits.

Every YAML the package reads (run configs, study files, hparams, profiles, negation tables,
RLEdit settings, ``--set`` values) goes through :func:`load_yaml` (a file) or
:func:`parse_yaml` (text). They refuse, before anything is built from the document:

- a file over :data:`MAX_BYTES` (it reads no more than that, so ``/dev/zero`` is refused too);
- a document whose aliases would expand it past :data:`MAX_NODES` nodes or
  :data:`MAX_CHARS` characters of scalars (a "billion laughs" file of a few hundred bytes
  expands to billions of nodes): the composed node graph is measured with every alias
  expanded, sharing work between repeated aliases, so such a file is refused in
  milliseconds;
- a recursive alias (a node that contains itself) and nesting too deep to compose.

Anchors, aliases and merge keys (``<<: *base``) work as usual within the limits. The
refusal is a :class:`YAMLInputError`: a ``yaml.YAMLError`` (so the readers' existing
handlers name the file, as for any unreadable YAML) and a ``UserError``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml

from .errors import UserError

MAX_BYTES = 4 * 1024 * 1024  # 4 MiB: far above any config, table or hparams file
MAX_NODES = 1_000_000  # nodes of the document with every alias expanded
MAX_CHARS = 16 * MAX_BYTES  # characters of its scalars, likewise


class YAMLInputError(UserError, yaml.YAMLError):
    """A YAML input over a limit; ``str(err)`` says which (the reader names the file)."""


def load_yaml(path: str | os.PathLike) -> Any:
    """The document in the file ``path``, as ``yaml.safe_load`` builds it, or
    :class:`YAMLInputError`; ``OSError`` when it cannot be opened or read."""
    return parse_yaml(_read(Path(path)), name=str(path))


def parse_yaml(text: str, name: str = "the value") -> Any:
    """The document in ``text`` (e.g. a ``--set`` value), as ``yaml.safe_load`` builds it,
    or :class:`YAMLInputError`; ``name`` is what a syntax error's position names."""
    if len(text) > MAX_BYTES:
        raise YAMLInputError(f"{len(text):,} characters, over the {MAX_BYTES:,}-byte limit of YAML input")
    loader = yaml.SafeLoader(text)
    loader.name = name  # PyYAML says "<unicode string>" otherwise
    try:
        try:
            node = loader.get_single_node()
        except RecursionError:
            raise YAMLInputError("nested too deeply to read") from None
        if node is None:
            return None
        _check_expansion(node)
        return loader.construct_document(node)
    finally:
        loader.dispose()


def _read(path: Path) -> str:
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size  # 0 for a pipe or a device: read up to the limit
        data = f.read(MAX_BYTES + 1) if size == 0 or size > MAX_BYTES else f.read()
    if len(data) > MAX_BYTES:
        raise YAMLInputError(f"larger than {MAX_BYTES:,} bytes (4 MiB), the limit of YAML files")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise YAMLInputError(f"not UTF-8 text (byte {data[exc.start]:#04x} at offset {exc.start:,})") from None


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _check_expansion(root: yaml.Node) -> None:
    """Refuse a graph whose alias expansion exceeds the limits. Iterative post-order over
    the distinct nodes; an alias is the same node object as its anchor, so each node's
    expanded size is computed once and reused."""
    sizes: dict[int, tuple[int, int]] = {}  # id(node) -> (nodes, scalar characters) expanded
    open_nodes: set[int] = set()  # the path from the root to the node being expanded
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            open_nodes.discard(key)
            own = len(node.value) if isinstance(node, yaml.ScalarNode) else 0
            nodes = 1 + sum(sizes[id(child)][0] for child in _children(node))
            chars = own + sum(sizes[id(child)][1] for child in _children(node))
            if nodes > MAX_NODES or chars > MAX_CHARS:
                raise YAMLInputError(f"its aliases expand it past {MAX_NODES:,} nodes or {MAX_CHARS:,} characters "
                                     "(the limits of YAML input; a 'billion laughs' document?)")
            sizes[key] = (nodes, chars)
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise YAMLInputError(f"a recursive alias (line {node.start_mark.line + 1}): a node that contains itself")
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((child, False) for child in _children(node) if id(child) not in sizes)
