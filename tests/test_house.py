"""The house rules of src/editprobe, read from the source (house_checks.py: ``ast``, nothing
imported): sizes, no import cycles, imports never climb a floor, editors are reached through
their declared contract, no room reads another room's privates. Each finding names file:line.
The checks are themselves tested on a small made-up package below.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from house_checks import (
    cycles,
    import_edges,
    layer_violations,
    load_package,
    oversized,
    private_reads,
    read_allowlist,
    size_findings,
    text_matches,
)

REPO = Path(__file__).resolve().parents[1]
ALLOWLIST = Path(__file__).with_name("house_allowlist.toml")
MAX_FILE_LINES, MAX_FUNCTION_LINES = 400, 80

# The floors, bottom up (README "Layout"): a module imports from its own room and from rooms
# on lower floors only. Rooms sharing a floor never import each other — editing and probes:
# the engine knows no probe and no probe knows the engine — except on the ground floor, whose
# small shared modules may ("" is the package's own __init__). A new room must be placed here.
# A leaf imports nothing but the ground floor: data (records, loaders, corpora) needs no model.
FLOORS = [
    {"", "errors", "forms", "jsontext", "yamlio", "locks", "paths", "progress", "registry", "workdir"},
    {"data"},  # records, corpora, negation: a leaf above the shared modules
    {"models"},  # may read a corpus (the tiny models' C0 text); data never imports models
    {"editing", "probes"},
    {"runs"},
    {"studies", "jobs", "evaluation"},  # the other commands' rooms, above the experiment and its kit
    {"analysis", "report"},
    {"cli"},
    {"__main__"},
]
LEAVES = frozenset({"data"})
# Editors are reached through editing/api.py's declared members, never by probing for them.
FORBIDDEN_TEXT = ("getattr(editor", "hasattr(editor", "getattr(method_class")


@pytest.fixture(scope="module")
def house():
    return load_package(REPO / "src", "editprobe", root=REPO)


def _report(title: str, findings: list[str]) -> str:
    return f"{title} ({len(findings)}):\n  " + "\n  ".join(findings)


# --- the rules, on src/editprobe ---------------------------------------------------------------


def test_no_file_or_function_over_the_size_limits(house):
    found = size_findings(house, ALLOWLIST, MAX_FILE_LINES, MAX_FUNCTION_LINES)
    assert not found, _report(f"split by concept, or list the exception with a reason in {ALLOWLIST.name}", found)


def test_no_import_cycles(house):
    found = [f"cycle of {len(group)} modules: {', '.join(group)}\n    " + "\n    ".join(map(str, inside))
             for group, inside in cycles(import_edges(house))]
    assert not found, _report("import cycles (module-level, in functions and under TYPE_CHECKING)", found)


# The package's public entry points above the ground floor, imported lazily by its __init__
# (``editprobe.evaluate``, so ``import editprobe`` stays light): the one sanctioned climb.
ROOT_EXPORTS = {("editprobe", "editprobe.evaluation")}


def test_imports_never_climb_a_floor(house):
    edges = [e for e in import_edges(house) if not ((e.source, e.target) in ROOT_EXPORTS and e.how == "in a function")]
    found = layer_violations(edges, house, FLOORS, leaves=LEAVES)
    assert not found, _report("imports against the floors (tests/test_house.py FLOORS)", found)


def test_editors_are_not_probed_for_members(house):
    found = text_matches(house, FORBIDDEN_TEXT)
    assert not found, _report("editors reached by getattr/hasattr instead of the Editor contract", found)


def test_no_room_reads_another_rooms_privates(house):
    found = private_reads(house)
    assert not found, _report("private names reached from another room (make them public or add a hook)", found)


# --- the checks can fail: a made-up package with one of each problem --------------------------


FAKE = {
    "__init__.py": '"""The fake package."""\n',
    "errors.py": "class Boom(Exception):\n    pass\n",
    "low/__init__.py": "from .a import thing\n",
    "low/a.py": ("from __future__ import annotations\nfrom typing import TYPE_CHECKING\n"
                 "if TYPE_CHECKING:\n    from .b import Other\n\n\nthing = 1\n\n\n"
                 "def _helper():\n    return 2\n\n\nclass Store:\n    _cache = None\n\n"
                 "    def __init__(self):\n        self._items = []\n\n    def _request(self):\n        return 3\n"),
    "low/b.py": "def other():\n    from . import a\n    return a.thing + a._helper() + a.Store()._request()\n",
    "low/f.py": "from ..high import e\n",
    "low/old.py": '"""Moved.\n\nDeprecated alias: the names live in fake.high.c now."""\nfrom ..high.c import shown\n',
    "high/__init__.py": "",
    "high/c.py": ("from ..low import a as mod\nfrom ..low.a import Store, _helper\nfrom .d import probe\n\n\n"
                  "def shown(store: Store):\n    store._request()\n    getattr(store, '_items')\n"
                  "    mod._helper()\n    store._cache_of_torch\n    return len(store.__dict__)\n"),
    "high/d.py": "import fake.low.old\n\n\ndef probe(editor):\n    return hasattr(editor, 'x')\n",
    "high/e.py": "def long():\n" + "    x = 1\n" * 85 + "    return x\n",
}


@pytest.fixture
def fake(tmp_path):
    for rel, text in FAKE.items():
        path = tmp_path / "src" / "fake" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return load_package(tmp_path / "src", "fake", root=tmp_path)


def test_the_cycle_check_sees_function_level_type_checking_and_through_aliases(fake):
    found = [(group, [str(e) for e in inside]) for group, inside in cycles(import_edges(fake))]
    assert found == [
        # d imports the deprecated alias low/old.py: that counts as importing high/c.py.
        (["fake.high.c", "fake.high.d"], ["src/fake/high/c.py:3: fake.high.c imports fake.high.d",
                                          "src/fake/high/d.py:1: fake.high.d imports fake.high.c"]),
        # a -> b under TYPE_CHECKING, b -> a in a function ("from . import a": the submodule).
        (["fake.low.a", "fake.low.b"], ["src/fake/low/a.py:4: fake.low.a imports fake.low.b (under TYPE_CHECKING)",
                                        "src/fake/low/b.py:2: fake.low.b imports fake.low.a (in a function)"]),
    ]
    assert all("fake.low.old" not in (e.source, e.target) for e in import_edges(fake))


def test_the_floor_check_names_upward_and_sideways_imports(fake):
    edges = import_edges(fake)
    assert layer_violations(edges, fake, [{"", "errors"}, {"low"}, {"high"}]) == [
        "src/fake/low/f.py:1: fake.low.f imports fake.high.e (upward: 'low' on floor 1 may not import 'high' on floor 2)"]
    assert layer_violations(edges, fake, [{"", "errors"}, {"low", "high"}]) == [
        f"{where}: fake.{a}.{m} imports fake.{b}.{n} (sideways: {a!r} and {b!r} share floor 1 and never import each other)"
        for where, a, m, b, n in (("src/fake/high/c.py:1", "high", "c", "low", "a"),
                                  ("src/fake/high/c.py:2", "high", "c", "low", "a"),
                                  ("src/fake/low/f.py:1", "low", "f", "high", "e"))]
    # A leaf above another floor still imports only the ground floor.
    assert layer_violations(edges, fake, [{"", "errors"}, {"low"}, {"high"}], leaves=frozenset({"high"})) == [
        "src/fake/high/c.py:1: fake.high.c imports fake.low.a (a leaf: 'high' imports only floor 0)",
        "src/fake/high/c.py:2: fake.high.c imports fake.low.a (a leaf: 'high' imports only floor 0)",
        "src/fake/low/f.py:1: fake.low.f imports fake.high.e (upward: 'low' on floor 1 may not import 'high' on floor 2)"]
    unplaced = layer_violations(edges, fake, [{"", "errors"}, {"low"}])
    assert unplaced == ["src/fake/high/__init__.py: room 'high' (fake.high) is on no floor: place it in the layer table"]


def test_the_size_check_names_long_functions_and_reads_the_allowlist(fake, tmp_path):
    files, functions = oversized(fake, 400, 80)
    assert files == {} and functions == {"fake/high/e.py:long": (87, "src/fake/high/e.py:1")}
    files, _ = oversized(fake, 50, 80)
    assert set(files) == {"fake/high/e.py"}
    allow = tmp_path / "allow.toml"
    allow.write_text("[files]\n[functions]\n")
    assert size_findings(fake, allow, 400, 80) == [
        "src/fake/high/e.py:1: long has 87 lines (over 80; allowlist key 'fake/high/e.py:long')"]
    allow.write_text('[functions]\n"fake/high/e.py:long" = "a made-up reason"\n')
    assert size_findings(fake, allow, 400, 80) == []
    allow.write_text('[files]\n"fake/low/a.py" = "no longer needed"\n[functions]\n"fake/high/e.py:long" = "still"\n')
    assert size_findings(fake, allow, 400, 80) == [
        "allow.toml: [files] 'fake/low/a.py' is not over 400 lines (or is gone): remove it"]


def test_the_text_check_names_the_line(fake):
    assert text_matches(fake, FORBIDDEN_TEXT) == ["src/fake/high/d.py:5: return hasattr(editor, 'x')"]


def test_the_private_check_names_cross_room_reads_only(fake):
    found = private_reads(fake)
    assert found == [
        "src/fake/high/c.py:2: from fake.low.a import _helper (a private of room 'low')",
        "src/fake/high/c.py:7: store._request (defined only in classes of low; read from 'high')",
        "src/fake/high/c.py:8: getattr(store, '_items') (defined only in classes of low; read from 'high')",
        "src/fake/high/c.py:9: mod._helper (a private of fake.low.a, room 'low')",
    ]  # not store._cache_of_torch (defined nowhere here), not __dict__, not the alias module, not low/b.py's
    # reads of its own room's privates


def test_the_allowlist_wants_a_reason(tmp_path):
    path = tmp_path / "allow.toml"
    path.write_text('[files]\n"editprobe/x.py" = ""\n')
    with pytest.raises(AssertionError, match="one-line reason"):
        read_allowlist(path)
    path.write_text('[files]\n"editprobe/x.py" = "one grammar"\n[functions]\n')
    assert read_allowlist(path) == ({"editprobe/x.py": "one grammar"}, {})
