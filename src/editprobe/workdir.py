"""Directories editprobe owns: the one helper every job (run, study, edit, train, trace,
analyze, report) opens its output through.

A job directory carries a marker, ``.editprobe.json``, written before anything else: what
the directory is (its kind), the layout and editprobe version that wrote it, and the
top-level entries editprobe owns in it. Only a directory whose marker names the job's kind
is ever resumed, rewritten, overwritten or deleted; anything else is refused in one line
before any work. ``--fresh``/``--overwrite`` delete only the owned entries; a user's own
files beside them are kept and named in one ``warning:`` line. While a job runs it holds
the directory's lock (``.editprobe.lock``, locks.py), and opening the directory completes
or rolls back a swap a killed process left (paths.recover_swaps).

Directories made before markers existed count as editprobe's when they carry the evidence
of their kind (:data:`KINDS`' ``legacy``): they are adopted (the marker is written) when a
job opens them.
"""

from __future__ import annotations

import datetime as dt
import shutil
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from .errors import EditprobeWarning, OutputError
from .locks import FileLock, Holder, lock_holder
from .paths import TMP_INFIX, check_writable, read_json_object, recover_swaps, write_json_atomic

MARKER = ".editprobe.json"
LOCK = ".editprobe.lock"
_OURS = (MARKER, LOCK)


class ForeignDirectoryError(OutputError):
    """A directory editprobe did not make (or made for another job): never touched."""


def _is_file(root: Path, name: str) -> bool:
    return (root / name).is_file()


def _run_config(root: Path) -> bool:
    """A run's config.json: with its layout, or (layout 0, before probes were plug-ins) with
    the fields every run config had."""
    try:
        config = read_json_object(root / "config.json")
    except ValueError:
        return False
    return "run_layout" in config or {"model", "methods", "datasets", "batch_size"} <= set(config)


def _only(names: Callable[[str], bool]) -> Callable[[Path], bool]:
    """Evidence: a non-empty directory every visible entry of which is one of ``names``."""
    def check(root: Path) -> bool:
        entries = [p.name for p in root.iterdir() if not p.name.startswith(".")]
        return bool(entries) and all(names(name) for name in entries)

    return check


REPORT_TABLES = ("negation", "factcheck", "ablation", "classic", "cost", "settings")
TRACE_FILES = ("trace.json", "trace_records.safetensors", "trace_block.png", "trace_mlp.png", "trace_attn.png",
               "trace_summary.png")
ANALYSIS_FILES = ("analysis.json", "vectors.safetensors", "analysis_pca.png", "analysis_tsne.png")


@dataclass(frozen=True)
class DirKind:
    """One kind of job directory: its name in the marker, how messages call it, its
    layout, the entries it writes and the evidence of a directory made before markers."""

    name: str
    title: str
    entries: tuple[str, ...]
    legacy: Callable[[Path], bool]
    layout: int = 1


KINDS: dict[str, DirKind] = {kind.name: kind for kind in (
    DirKind("run", "a run", ("config.json", "progress.json", "checkpoints", "stages", "samples.jsonl", "summary.json",
                             "records.jsonl", "report", "models"), _run_config),
    DirKind("study", "a study", ("study.yaml", "status", "runs"),
            lambda root: _is_file(root, "study.yaml") and ((root / "status").is_dir() or (root / "runs").is_dir())),
    DirKind("edit", "an edit result", ("state", "report.json"),
            lambda root: _is_file(root, "report.json") and _is_file(root / "state", "state.json")),
    DirKind("train", "a training", ("config.json", "checkpoint", "hypernet", "training.json"),
            lambda root: _is_file(root, "config.json") and (
                _is_file(root / "checkpoint", "progress.json") or _is_file(root / "hypernet", "hypernet.json")
                or _is_file(root, "training.json"))),
    DirKind("trace", "a trace", TRACE_FILES, _only(lambda name: name in TRACE_FILES)),
    DirKind("analysis", "an analysis", ANALYSIS_FILES, _only(lambda name: name in ANALYSIS_FILES)),
    DirKind("report", "a report", (),
            _only(lambda name: name.rpartition(".")[0] in REPORT_TABLES and name.rpartition(".")[2] in ("md", "csv", "tex"))),
)}


def _version() -> str:
    try:
        return metadata.version("editprobe")
    except metadata.PackageNotFoundError:
        return "unknown"


class WorkDir:
    """One job directory of kind ``kind`` at ``root``; ``option`` names it in messages.

    ``check()`` reads only (for preflights); ``hold()`` is the job's session: it creates the
    directory if needed, takes the lock, writes (or adopts) the marker and repairs swaps,
    and on a failure removes a directory it created that holds nothing of the job's yet.
    """

    def __init__(self, root: str | Path, kind: str, option: str = "--out") -> None:
        self.root = Path(root).expanduser()
        self.kind = KINDS[kind]
        self.option = option
        self._lock: FileLock | None = None

    @property
    def where(self) -> str:
        return f"{self.option} {self.root}" if self.option else str(self.root)

    # --- what is here ---------------------------------------------------------------------------
    def marker(self) -> dict | None:
        """The marker's fields; None when there is none. An unreadable marker is refused."""
        path = self.root / MARKER
        if not path.is_file():
            return None
        try:
            fields = read_json_object(path)
        except ValueError as exc:
            raise ForeignDirectoryError(f"{self.where}: its editprobe marker {MARKER} is unreadable ({exc}); "
                                        "choose another location, or remove the directory yourself") from None
        if not isinstance(fields.get("kind"), str) or not isinstance(fields.get("owned", []), list):
            raise ForeignDirectoryError(f"{self.where}: its editprobe marker {MARKER} is not one editprobe wrote; "
                                        "choose another location")
        return fields

    def entries(self) -> list[str]:
        """The visible and hidden entries, less the marker, the lock and swap temporaries."""
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir()
                      if p.name not in _OURS and not (p.name.startswith(".") and TMP_INFIX in p.name))

    def state(self) -> str:
        """absent | empty | ours | legacy | other:<kind> | foreign."""
        if not self.root.exists():
            return "absent"
        if not self.root.is_dir():
            return "foreign"
        marker = self.marker()
        if marker is not None:
            return "ours" if marker["kind"] == self.kind.name else f"other:{marker['kind']}"
        if not self.entries():
            return "empty"
        if self.kind.legacy(self.root):
            return "legacy"
        for other in KINDS.values():
            if other is not self.kind and other.legacy(self.root):
                return f"other:{other.name}"
        return "foreign"

    @property
    def is_ours(self) -> bool:
        return self.state() in ("ours", "legacy")

    def owned(self) -> list[str]:
        marker = self.marker()
        listed = marker.get("owned", []) if marker is not None else []
        return sorted(set(self.kind.entries) | {str(name) for name in listed})

    def foreign_entries(self) -> list[str]:
        owned = set(self.owned())
        return [name for name in self.entries() if name not in owned]

    # --- checks ----------------------------------------------------------------------------------
    def check(self) -> None:
        """Refuse, before any work, a location that is not (or cannot become) this kind of
        editprobe directory: a file, a directory another program or another job wrote, a
        marker from a newer layout. Nothing is written."""
        state = self.state()
        if state == "foreign" and self.root.exists() and not self.root.is_dir():
            raise ForeignDirectoryError(f"{self.where}: is a file, not a directory")
        if state == "foreign":
            shown = ", ".join(self.entries()[:3]) + (", ..." if len(self.entries()) > 3 else "")
            raise ForeignDirectoryError(f"{self.where}: not {self.kind.title} directory: it exists and holds {shown} "
                                        f"but no {MARKER} (editprobe writes into and deletes only directories it "
                                        "made); choose another location")
        if state.startswith("other:"):
            other = KINDS.get(state.split(":", 1)[1])
            what = other.title if other is not None else f"an editprobe {state.split(':', 1)[1]}"
            raise ForeignDirectoryError(f"{self.where}: holds {what} directory, not {self.kind.title} directory; "
                                        "choose another location")
        marker = self.marker()
        if marker is not None and int(marker.get("layout", 1)) > self.kind.layout:
            raise ForeignDirectoryError(f"{self.where}: was written by a newer editprobe ({marker.get('version')}, "
                                        f"layout {marker.get('layout')}); use that version, or another location")
        if not self.root.exists():
            check_writable(self.root, self.option or "directory")

    # --- the job's session -----------------------------------------------------------------------
    def acquire(self) -> list[str]:
        """Create the directory if needed, lock it, write or adopt the marker, repair swaps;
        returns the names of the entries a repaired swap restored."""
        self.check()
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise OutputError(f"{self.where}: cannot create it: {exc.strerror or type(exc).__name__}") from None
        lock = FileLock(self.root / LOCK, self.where)
        lock.acquire()
        try:
            self.check()  # another process may have claimed it between our check and our lock
            if self.state() != "ours":
                self._write_marker(self.owned())
            # Not into job directories inside this one (a study's runs): each is repaired by
            # the job that opens it, under its own lock.
            repaired = recover_swaps(self.root, descend=lambda path: not (path / MARKER).exists())
        except BaseException:
            lock.release()
            raise
        self._lock = lock
        return repaired

    def release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    @property
    def locked(self) -> bool:
        return self._lock is not None

    @contextmanager
    def hold(self) -> Iterator["WorkDir"]:
        """``acquire`` for the body; on a failure (or Ctrl-C) a directory this call created
        and left with nothing of the job's in it is removed again."""
        created = not self.root.exists()
        try:
            self.acquire()  # inside: a failure (or Ctrl-C) after the mkdir removes it too
            yield self
        except BaseException:
            self.release()
            if created:
                self.remove_if_unused()
            raise
        self.release()

    def remove_if_unused(self) -> None:
        """Remove the directory when it holds nothing but the marker and the lock."""
        if self.root.is_dir() and not self.entries() and self.holder() is None:
            shutil.rmtree(self.root, ignore_errors=True)

    def own(self, *names: str) -> None:
        """Record ``names`` as entries editprobe wrote (before writing them)."""
        owned = self.owned()
        if set(names) - set(owned):
            self._write_marker(sorted(set(owned) | set(names)))

    def _write_marker(self, owned: list[str]) -> None:
        old = self.marker() or {}
        write_json_atomic(self.root / MARKER, {
            "kind": self.kind.name, "layout": self.kind.layout, "version": _version(),
            "created": old.get("created") or dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "owned": owned, "note": "written by editprobe: only the entries under 'owned' are editprobe's"})

    def clear(self) -> None:
        """Delete the owned entries (``--fresh``, ``--overwrite``); keep everything else and
        name it in one warning."""
        for name in self.owned():
            path = self.root / name
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            elif path.exists() or path.is_symlink():
                path.unlink()
        self.warn_foreign()

    def warn_foreign(self) -> None:
        foreign = self.foreign_entries()
        if foreign:
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            warnings.warn(EditprobeWarning(f"{self.root}: kept {len(foreign)} entr{'y' if len(foreign) == 1 else 'ies'} "
                                           f"editprobe did not write: {shown}"), stacklevel=2)

    def holder(self) -> Holder | None:
        """Who holds the directory's lock now (None: nobody; a job that died holds nothing)."""
        return lock_holder(self.root / LOCK)

