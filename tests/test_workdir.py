"""Ownership markers, locks and rename-aside swaps (workdir.py, locks.py, paths.py): the rules
every job directory follows, on plain directories (no model)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import pytest

from editprobe.errors import EditprobeWarning
from editprobe.locks import FileLock, LockHeldError, lock_holder
from editprobe.paths import atomic_path, recover_swaps
from editprobe.workdir import LOCK, MARKER, ForeignDirectoryError, WorkDir


def test_a_new_directory_gets_its_marker_first(tmp_path):
    work = WorkDir(tmp_path / "out", "edit")
    assert work.state() == "absent"
    with work.hold():
        marker = json.loads((tmp_path / "out" / MARKER).read_text())
        assert marker["kind"] == "edit" and marker["layout"] == 1 and set(marker["owned"]) == {"state", "report.json"}
        assert work.state() == "ours"


def test_a_foreign_directory_is_refused_and_left_alone(tmp_path):
    out = tmp_path / "model"
    out.mkdir()
    (out / "config.json").write_text('{"model_type": "llama"}')
    for kind in ("run", "edit", "study", "train", "trace", "analysis", "report"):
        with pytest.raises(ForeignDirectoryError, match=f"not a{'n' if kind[0] in 'ae' else ''} .*directory"):
            WorkDir(out, kind).check()
        with pytest.raises(ForeignDirectoryError):
            WorkDir(out, kind).clear() if WorkDir(out, kind).is_ours else WorkDir(out, kind).acquire()
    assert sorted(p.name for p in out.iterdir()) == ["config.json"]


def test_another_kind_of_editprobe_directory_is_named(tmp_path):
    with WorkDir(tmp_path / "d", "edit").hold():
        pass
    with pytest.raises(ForeignDirectoryError, match="holds an edit result directory, not a run directory"):
        WorkDir(tmp_path / "d", "run").check()


def test_directories_of_earlier_versions_are_adopted_by_their_evidence(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text(json.dumps({"run_layout": 1, "model": "m"}))
    assert WorkDir(run, "run").state() == "legacy"
    edit = tmp_path / "edit"
    (edit / "state").mkdir(parents=True)
    (edit / "state" / "state.json").write_text("{}")
    (edit / "report.json").write_text("{}")
    assert WorkDir(edit, "edit").state() == "legacy"
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "report.json").write_text("{}")  # no state/state.json beside it: not an edit result
    assert WorkDir(tmp_path / "half", "edit").state() == "foreign"
    with WorkDir(edit, "edit").hold():
        assert WorkDir(edit, "edit").state() == "ours"


def test_clear_deletes_only_what_editprobe_owns_and_names_the_rest(tmp_path):
    work = WorkDir(tmp_path / "out", "edit")
    with work.hold():
        (work.root / "state").mkdir()
        (work.root / "report.json").write_text("{}")
        (work.root / "notes.txt").write_text("mine")
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            work.clear()
    assert sorted(p.name for p in work.root.iterdir()) == sorted([MARKER, LOCK, "notes.txt"])
    assert len(caught) == 1 and issubclass(caught[0].category, EditprobeWarning)
    assert "kept 1 entry editprobe did not write: notes.txt" in str(caught[0].message)


def test_a_failed_job_removes_the_directory_it_created(tmp_path):
    work = WorkDir(tmp_path / "out", "trace")
    with pytest.raises(RuntimeError):
        with work.hold():
            raise RuntimeError("boom")
    assert not (tmp_path / "out").exists()


def test_a_second_holder_is_refused_with_the_first_ones_pid_and_host(tmp_path):
    first = WorkDir(tmp_path / "out", "run")
    with first.hold():
        holder = first.holder()
        assert holder is not None and holder.pid == os.getpid()
        with pytest.raises(LockHeldError) as caught:
            WorkDir(tmp_path / "out", "run").acquire()
        message = str(caught.value)
        assert f"pid {os.getpid()} on {os.uname().nodename}" in message and "--out" in message
    assert first.holder() is None  # released: nobody holds it


def test_a_dead_process_holds_no_lock(tmp_path):
    path = tmp_path / "lock"
    code = f"from editprobe.locks import FileLock; FileLock({str(path)!r}, 'x').acquire(); import os; os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert path.exists() and lock_holder(path) is None
    with FileLock(path, "x"):
        pass


def test_a_lock_beside_a_file_is_removed_and_never_split(tmp_path):
    path = tmp_path / ".x.lock"
    with FileLock(path, "x", remove=True):
        assert path.exists()
    assert not path.exists()


def test_a_swap_killed_between_its_renames_is_completed(tmp_path):
    target = tmp_path / "checkpoint"
    target.mkdir()
    (target / "v").write_text("old")
    # The state a kill between the two renames leaves: the old version set aside, the new
    # one complete in its temporary directory.
    (tmp_path / ".checkpoint.old").mkdir()
    target.rename(tmp_path / ".checkpoint.old")
    staged = tmp_path / ".checkpoint.tmp-abc" / "checkpoint"
    staged.mkdir(parents=True)
    (staged / "v").write_text("new")
    assert recover_swaps(tmp_path) == ["checkpoint"]
    assert (target / "v").read_text() == "new"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint"]


def test_a_swap_with_no_new_version_rolls_back_and_half_writes_go(tmp_path):
    (tmp_path / ".state.old").mkdir()
    (tmp_path / ".state.old" / "v").write_text("old")
    (tmp_path / ".summary.json.tmp-x").mkdir()  # a file write that never finished
    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / ".a.json.tmp-y").mkdir()
    recover_swaps(tmp_path)
    assert (tmp_path / "state" / "v").read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["stages", "state"]
    assert list((tmp_path / "stages").iterdir()) == []


def test_directory_replacement_is_rename_aside(tmp_path, monkeypatch):
    target = tmp_path / "d"
    target.mkdir()
    (target / "v").write_text("old")
    seen = []
    original = os.rename

    def spy(src, dst):
        seen.append((os.path.basename(src), os.path.basename(dst), target.exists()))
        return original(src, dst)

    monkeypatch.setattr("editprobe.paths.os.rename", spy)
    with atomic_path(target) as tmp:
        tmp.mkdir()
        (tmp / "v").write_text("new")
    assert (target / "v").read_text() == "new"
    assert [s[:2] for s in seen] == [("d", ".d.old"), ("d", "d")]  # old aside first, never removed first
    assert not (tmp_path / ".d.old").exists()


def test_the_evidence_of_trace_and_analysis_directories_names_what_they_write():
    from editprobe.analysis.mechanism_figures import FIGURE_NAMES
    from editprobe.analysis.trace_output import ARRAYS_FILE, FIGURES
    from editprobe.workdir import ANALYSIS_FILES, TRACE_FILES

    assert set(TRACE_FILES) == {"trace.json", ARRAYS_FILE, *FIGURES.values()}
    assert set(ANALYSIS_FILES) == {"analysis.json", "vectors.safetensors", *dict(FIGURE_NAMES).values()}
