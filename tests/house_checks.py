"""The house checks' machinery (tests/test_house.py), read from the source with ``ast``: nothing
is imported. No tests live here.

Every finding names ``file:line`` relative to the repository root. A package's *room* is its
top-level subpackage (``editprobe/editing/lte/keys.py`` -> ``editing``) or, for a module directly in
the package, the module (``editprobe/errors.py`` -> ``errors``; the package's own ``__init__``
-> ``""``). A module whose docstring has a line starting with ``Deprecated alias:`` only
re-exports moved names for a deprecation period: it is left out of the graph (an import of it
counts as importing what it imports) and of the private-access check.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

SHIM_MARK = "Deprecated alias:"


@dataclass(frozen=True)
class Module:
    name: str  # dotted, e.g. editprobe.editing.lte.keys
    path: Path
    where: str  # the path as findings print it
    is_package: bool
    tree: ast.Module

    @property
    def room(self) -> str:
        parts = self.name.split(".")
        return parts[1] if len(parts) > 1 else ""

    @property
    def shim(self) -> bool:
        doc = ast.get_docstring(self.tree) or ""
        return any(line.strip().startswith(SHIM_MARK) for line in doc.splitlines())


@dataclass(frozen=True)
class Edge:
    source: str
    target: str
    where: str  # file:line of the import statement
    how: str = ""  # "in a function", "under TYPE_CHECKING", or "" (at import time)

    def __str__(self) -> str:
        return f"{self.where}: {self.source} imports {self.target}" + (f" ({self.how})" if self.how else "")


def load_package(src: Path, package: str, root: Path | None = None) -> dict[str, Module]:
    """Every module of ``src/package`` by dotted name; ``where`` is relative to ``root``."""
    root = root or src.parent
    modules = {}
    for path in sorted((src / package).rglob("*.py")):
        parts = list(path.relative_to(src).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        name = ".".join(parts[:-1] if is_package else parts)
        where = path.relative_to(root).as_posix()
        modules[name] = Module(name, path, where, is_package, ast.parse(path.read_text(), filename=str(path)))
    return modules


def _base(module: Module, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    parts = module.name.split(".")
    if not module.is_package:
        parts = parts[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def imported_names(module: Module, node: ast.Import | ast.ImportFrom, modules) -> list[tuple[str, str | None]]:
    """(module imported, name taken from it or None) for each name of one import statement;
    ``from pkg import name`` where ``pkg.name`` is a module imports that module."""
    if isinstance(node, ast.Import):
        return [(alias.name, None) for alias in node.names]
    base = _base(module, node)
    out = []
    for alias in node.names:
        sub = f"{base}.{alias.name}"
        out.append((sub, None) if sub in modules else (base, alias.name))
    return out


def _place(finding: str) -> tuple[str, int]:
    path, line, *_ = finding.split(":")
    return path, int(line) if line.isdigit() else 0


def by_place(findings: list[str]) -> list[str]:
    """Findings ordered by file, then line."""
    return sorted(findings, key=_place)


def _imports(node: ast.AST, how: str = ""):
    """(import statement, how it runs) under ``node``."""
    for child in ast.iter_child_nodes(node):
        if isinstance(child, (ast.Import, ast.ImportFrom)):
            yield child, how
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            yield from _imports(child, how or "in a function")
        elif isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test):
            for statement in child.body:
                yield from _imports(ast.Module(body=[statement], type_ignores=[]), how or "under TYPE_CHECKING")
            for statement in child.orelse:
                yield from _imports(ast.Module(body=[statement], type_ignores=[]), how)
        else:
            yield from _imports(child, how)


def _direct_edges(modules: dict[str, Module]) -> list[Edge]:
    edges = {}  # one edge per import statement and target, in order
    for module in modules.values():
        for node, how in _imports(module.tree):  # module-level, in functions, under TYPE_CHECKING: all count
            for target, _ in imported_names(module, node, modules):
                if target in modules and target != module.name:
                    edges[Edge(module.name, target, f"{module.where}:{node.lineno}", how)] = None
    return list(edges)


def import_edges(modules: dict[str, Module]) -> list[Edge]:
    """The import graph inside the package, deprecated aliases looked through."""
    direct = _direct_edges(modules)
    out_of: dict[str, list[Edge]] = {}
    for edge in direct:
        out_of.setdefault(edge.source, []).append(edge)

    def through(target: str, seen: frozenset = frozenset()) -> set[str]:
        if not modules[target].shim:
            return {target}
        if target in seen:
            return set()
        found = set()
        for edge in out_of.get(target, []):
            found |= through(edge.target, seen | {target})
        return found

    edges = {}
    for edge in direct:
        if not modules[edge.source].shim:
            edges.update((Edge(edge.source, t, edge.where, edge.how), None) for t in sorted(through(edge.target))
                         if t != edge.source)
    return list(edges)


def cycles(edges: list[Edge]) -> list[tuple[list[str], list[Edge]]]:
    """Each strongly connected group of modules (Tarjan), with the imports inside it."""
    graph: dict[str, set[str]] = {}
    for edge in edges:
        graph.setdefault(edge.source, set()).add(edge.target)
        graph.setdefault(edge.target, set())
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    groups = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [(group, sorted((e for e in edges if e.source in group and e.target in group),
                           key=lambda e: _place(e.where)))
            for group in sorted(groups)]


def layer_violations(edges: list[Edge], modules: dict[str, Module], floors: list[set[str]],
                     mixed_floor: int = 0, leaves: frozenset[str] = frozenset()) -> list[str]:
    """Imports that climb: into a higher floor, or between two rooms of one floor (except on
    ``mixed_floor``, whose small modules may import each other); and imports of a room in
    ``leaves`` from anything above ``mixed_floor``. A room on no floor is one finding itself."""
    floor_of = {room: i for i, rooms in enumerate(floors) for room in rooms}
    unplaced = {}
    for m in modules.values():
        if m.room not in floor_of:
            unplaced.setdefault(m.room, m)
    found = [f"{m.where}: room {room!r} ({m.name}) is on no floor: place it in the layer table"
             for room, m in unplaced.items()]
    for edge in edges:
        a, b = modules[edge.source].room, modules[edge.target].room
        if a == b or a not in floor_of or b not in floor_of:
            continue
        fa, fb = floor_of[a], floor_of[b]
        if fb > fa:
            found.append(f"{edge} (upward: {a!r} on floor {fa} may not import {b!r} on floor {fb})")
        elif fb == fa and fa != mixed_floor:
            found.append(f"{edge} (sideways: {a!r} and {b!r} share floor {fa} and never import each other)")
        elif a in leaves and fb != mixed_floor:
            found.append(f"{edge} (a leaf: {a!r} imports only floor {mixed_floor})")
    return by_place(found)


def _functions(tree: ast.AST, prefix: str = ""):
    """(qualified name, node) of every function, methods and nested functions included."""
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            name = f"{prefix}{node.name}"
            if not isinstance(node, ast.ClassDef):
                yield name, node
            yield from _functions(node, f"{name}.")
        else:
            yield from _functions(node, prefix)


def oversized(modules: dict[str, Module], max_file: int, max_function: int) -> tuple[dict, dict]:
    """``({file key: (lines, where)}, {function key: (lines, where)})`` over the limits; keys are
    the path from the package folder (``editprobe/x.py``) and ``editprobe/x.py:Class.method``."""
    files, functions = {}, {}
    for m in modules.values():
        key = m.where.split("/", 1)[1] if m.where.startswith("src/") else m.where
        n = len(m.path.read_text().splitlines())
        if n > max_file:
            files[key] = (n, f"{m.where}:1")
        for qualname, node in _functions(m.tree):
            length = node.end_lineno - node.lineno + 1
            if length > max_function:
                functions[f"{key}:{qualname}"] = (length, f"{m.where}:{node.lineno}")
    return files, functions


def size_findings(modules: dict[str, Module], allowlist: Path, max_file: int, max_function: int) -> list[str]:
    """Files and functions over the limits that ``allowlist`` does not excuse, and the
    allowlist's entries that no longer need their exception (or name nothing)."""
    allowed_files, allowed_functions = read_allowlist(allowlist)
    files, functions = oversized(modules, max_file, max_function)
    found = [f"{where}: {key} has {n} lines (over {max_file})"
             for key, (n, where) in sorted(files.items()) if key not in allowed_files]
    found += [f"{where}: {key.split(':')[1]} has {n} lines (over {max_function}; allowlist key {key!r})"
              for key, (n, where) in sorted(functions.items()) if key not in allowed_functions]
    # An exception outlives its need: it goes, so the list holds only what still needs it.
    found += [f"{allowlist.name}: [files] {key!r} is not over {max_file} lines (or is gone): remove it"
              for key in sorted(set(allowed_files) - set(files))]
    found += [f"{allowlist.name}: [functions] {key!r} is not over {max_function} lines (or is gone): remove it"
              for key in sorted(set(allowed_functions) - set(functions))]
    return found


def text_matches(modules: dict[str, Module], needles: tuple[str, ...]) -> list[str]:
    """``file:line: text`` of every source line containing one of ``needles`` (grep -F)."""
    found = []
    for m in modules.values():
        for i, line in enumerate(m.path.read_text().splitlines(), 1):
            if any(needle in line for needle in needles):
                found.append(f"{m.where}:{i}: {line.strip()}")
    return found


def is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def private_definitions(modules: dict[str, Module]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """``(by attribute, by module)``: the rooms whose classes define each private attribute (a
    method, a class attribute, ``self._x = ...``), and each module's top-level private names."""
    by_attribute: dict[str, set[str]] = {}
    by_module: dict[str, set[str]] = {}
    for m in modules.values():
        by_module[m.name] = {n for n in _top_level_names(m.tree) if is_private(n)}
        for cls in (n for n in ast.walk(m.tree) if isinstance(n, ast.ClassDef)):
            for name in _class_attributes(cls):
                if is_private(name):
                    by_attribute.setdefault(name, set()).add(m.room)
    return by_attribute, by_module


def _top_level_names(tree: ast.Module):
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                yield from (n.id for n in ast.walk(target) if isinstance(n, ast.Name))


def _class_attributes(cls: ast.ClassDef):
    for node in cls.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            yield node.name
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                yield from (n.id for n in ast.walk(target) if isinstance(n, ast.Name))
    for node in ast.walk(cls):
        targets = node.targets if isinstance(node, ast.Assign) else (
            [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else [])
        for target in targets:
            for n in ast.walk(target):
                if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id in ("self", "cls"):
                    yield n.attr


def _own(value: ast.expr) -> bool:
    """``self``, ``cls`` or ``super()``: the object's own attributes."""
    if isinstance(value, ast.Name):
        return value.id in ("self", "cls")
    return isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id == "super"


def _module_aliases(m: Module, modules) -> dict[str, str]:
    """Local names bound to a module of the package (``import a.b as x``, ``from a import b``)."""
    aliases = {}
    for node in ast.walk(m.tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.asname and alias.name in modules:
                    aliases[alias.asname] = alias.name
        elif isinstance(node, ast.ImportFrom):
            for alias, (target, name) in zip(node.names, imported_names(m, node, modules)):
                if name is None and target in modules:
                    aliases[alias.asname or alias.name] = target
    return aliases


def private_reads(modules: dict[str, Module]) -> list[str]:
    """Private names reached across rooms: ``x._name`` (or ``getattr(x, "_name")``) where only
    classes of other rooms define ``_name``, or where ``x`` is another room's module defining
    it; and ``from <another room's module> import _name``. Names the package does not define
    (a library's privates) are not its business here."""
    by_attribute, by_module = private_definitions(modules)
    found = []
    for m in (m for m in modules.values() if not m.shim):
        aliases = _module_aliases(m, modules)
        for node in ast.walk(m.tree):
            for owner, name in _reached(node):
                if name is None or _own(owner):
                    continue
                target = aliases.get(owner.id) if isinstance(owner, ast.Name) else None
                if target is not None:
                    if modules[target].room != m.room and name in by_module[target]:
                        found.append(f"{m.where}:{node.lineno}: {ast.unparse(node)} "
                                     f"(a private of {target}, room {modules[target].room!r})")
                    continue
                rooms = by_attribute.get(name, set())
                if rooms and m.room not in rooms:
                    found.append(f"{m.where}:{node.lineno}: {ast.unparse(node)} "
                                 f"(defined only in classes of {', '.join(sorted(rooms))}; read from {m.room!r})")
            if isinstance(node, ast.ImportFrom):
                for alias, (target, name) in zip(node.names, imported_names(m, node, modules)):
                    private = name if name is not None else alias.name
                    if target in modules and modules[target].room != m.room and is_private(private):
                        found.append(f"{m.where}:{node.lineno}: from {target} import {private} "
                                     f"(a private of room {modules[target].room!r})")
    return by_place(found)


def _reached(node: ast.AST):
    """(object, private attribute) that ``node`` reaches, if any."""
    if isinstance(node, ast.Attribute) and is_private(node.attr):
        yield node.value, node.attr
    elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
          and node.func.id in ("getattr", "hasattr", "setattr", "delattr") and len(node.args) >= 2
          and isinstance(node.args[1], ast.Constant) and isinstance(node.args[1].value, str)
          and is_private(node.args[1].value)):
        yield node.args[0], node.args[1].value


def read_allowlist(path: Path) -> tuple[dict[str, str], dict[str, str]]:
    """``(files, functions)``: each exception with its one-line reason."""
    import tomllib

    data = tomllib.loads(path.read_text())
    unknown = set(data) - {"files", "functions"}
    assert not unknown, f"{path}: unknown sections {sorted(unknown)}; use [files] and [functions]"
    files, functions = data.get("files", {}), data.get("functions", {})
    for key, reason in {**files, **functions}.items():
        assert isinstance(reason, str) and reason.strip() and "\n" not in reason.strip(), \
            f"{path}: {key!r} needs a one-line reason"
    return files, functions
