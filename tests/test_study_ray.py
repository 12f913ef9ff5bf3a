"""`editprobe study --backend ray` on tiny models, on one 2-CPU Ray cluster for the module
(`ray start --head`, reached with --address): the same report as the local backend; a worker
SIGKILLed after a checkpoint is retried by Ray and resumes from that checkpoint; retries
spent leave a failed run (with why) and the others finished; bad options are one line."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest
import yaml
from cli_helpers import deterministic_tables, invoke
from ray_helpers import free_port, local_ray_head
from test_runs_helpers import comparable, subprocess_env
from test_study import _study_file

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'editprobe[ray]')")

pytestmark = pytest.mark.timeout(600)  # a hang guard; each test takes seconds on an idle 2-core machine

KILLED = "00__model__memit__cf__kp__seed0"  # the first run of _study_file's grid
STAGE = "cf__memit__positive"  # its first stage with a checkpoint (one batch: n 3, batch_size 3)


@pytest.fixture(scope="module")
def ws(run_ws):
    return run_ws


@pytest.fixture(scope="module")
def cluster(ws):
    """HOST:PORT of a 2-CPU Ray head whose workers see the workspace's cache and tests/
    (ray_kill_hook), stopped (by its pid) after the module. Without Ray's token authentication
    (the driver, this process, is given no token), whatever ~/.ray holds."""
    with local_ray_head(subprocess_env(ws["root"])) as address:
        yield address


@pytest.fixture(scope="module")
def reference(ws, tmp_path_factory):
    """The same study, uninterrupted, on the local backend."""
    root = tmp_path_factory.mktemp("local")
    study = _study_file(ws, root / "grid.yaml")
    result = invoke(["study", study, "--out", root / "s", "--threads", "1"])
    assert result.exit_code == 0, result.output
    return root / "s"


def _arm_kill(monkeypatch, **env: str) -> None:
    """The next study's Ray job runs tests/ray_kill_hook.py in every worker (test-only)."""
    init = ray.init

    def init_with_hook(*args, **kwargs):
        kwargs["runtime_env"] = {"worker_process_setup_hook": "ray_kill_hook.arm", "env_vars": env}
        return init(*args, **kwargs)

    monkeypatch.setattr(ray, "init", init_with_hook)


def _tables(study_dir: Path, tmp_path: Path) -> str:
    result = invoke(["report", study_dir, "--out", tmp_path / f"tables-{study_dir.name}"])
    assert result.exit_code == 0, result.output
    return deterministic_tables(result.stdout)


def _summary(study_dir: Path, run: str) -> dict:
    return json.loads((study_dir / "runs" / run / "summary.json").read_text())


def _states(study_dir: Path) -> list[str]:
    return invoke(["study", study_dir, "--status"]).stdout.splitlines()


def test_the_ray_backend_reports_what_the_local_one_does(ws, cluster, reference, tmp_path, monkeypatch):
    _arm_kill(monkeypatch, EDITPROBE_TEST_LINGER_S="2.5")  # no kill: each status line stays long enough to be seen
    study = _study_file(ws, tmp_path / "grid.yaml")
    result = invoke(["study", study, "--out", tmp_path / "s", "--backend", "ray", "--address", cluster])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[-1] == f"all 2 runs finished; tables: editprobe report {tmp_path / 's'}"
    runs = [line.split(": ")[0] for line in _states(reference)]
    for run in runs:  # the local backend's progress lines, in whatever order the tasks ran
        assert f"{run}: running" in lines and f"{run}: finished" in lines
        # and what each worker's run is doing, from its status (the workers' output stays in Ray's logs)
        assert f"{run}: running: cf memit positive: negation, factcheck on 3 records" in lines, lines
        assert any(line.startswith(f"{run}: running: [cf memit positive] editing batch 1/1 (3/3 records)")
                   for line in lines), lines
        assert comparable(_summary(tmp_path / "s", run)) == comparable(_summary(reference, run))
    assert _states(tmp_path / "s") == _states(reference)
    assert _tables(tmp_path / "s", tmp_path) == _tables(reference, tmp_path)


def test_a_killed_worker_is_retried_from_its_checkpoint(ws, cluster, reference, tmp_path, monkeypatch):
    marker = tmp_path / "killed.json"
    _arm_kill(monkeypatch, EDITPROBE_TEST_KILL_RUN=KILLED, EDITPROBE_TEST_KILL_MARKER=str(marker))
    study = _study_file(ws, tmp_path / "grid.yaml")
    result = invoke(["study", study, "--out", tmp_path / "s", "--backend", "ray", "--address", cluster])
    assert result.exit_code == 0, result.output
    assert marker.is_file(), "the worker was never killed: the test proves nothing"
    assert f"{KILLED}: running: retry 1 of 2 (its Ray worker died), from its checkpoints" in result.stdout
    assert result.stdout.count(f"{KILLED}: finished") == 1
    # The retry kept the killed attempt's batch: its timing is the one measured before the
    # kill (a redone batch would have been timed again).
    at_kill = json.loads(marker.read_text())["timings"][STAGE]
    summary = _summary(tmp_path / "s", KILLED)
    assert at_kill and summary["timings"]["batches"][STAGE] == at_kill
    assert comparable(summary) == comparable(_summary(reference, KILLED))
    assert _tables(tmp_path / "s", tmp_path) == _tables(reference, tmp_path)


def test_spent_retries_fail_the_run_with_why_and_lose_no_other(ws, cluster, reference, tmp_path, monkeypatch):
    marker = tmp_path / "attempts.txt"
    _arm_kill(monkeypatch, EDITPROBE_TEST_KILL_RUN=KILLED, EDITPROBE_TEST_KILL_MARKER=str(marker),
              EDITPROBE_TEST_KILL_ALWAYS="1")
    path = Path(_study_file(ws, tmp_path / "grid.yaml"))
    path.write_text(path.read_text() + "ray: {max_retries: 1}\n")
    result = invoke(["study", path, "--out", tmp_path / "s", "--backend", "ray", "--address", cluster])
    assert result.exit_code == 2
    assert result.error_lines == [result.stderr.strip()]
    assert result.stderr.startswith(f"error: 1 of 2 runs failed ({KILLED})")
    assert len(marker.read_text().splitlines()) == 2  # the first attempt and max_retries 1 retry
    failed, other = _states(tmp_path / "s")
    assert failed == (f"{KILLED}: failed: its Ray worker died (killed, or out of memory), 2 attempts "
                      "(max_retries 1); the work done is kept for --resume")
    assert other.endswith(": finished")
    monkeypatch.undo()  # the kill disarmed: --resume continues the failed run from its checkpoint
    resumed = invoke(["study", tmp_path / "s", "--resume", "--backend", "ray", "--address", cluster])
    assert resumed.exit_code == 0, resumed.output
    assert comparable(_summary(tmp_path / "s", KILLED)) == comparable(_summary(reference, KILLED))


@pytest.mark.parametrize("args,ray_section,message", [
    (["--backend", "local", "--address", "auto"], None, "--address is for --backend ray"),
    (["--backend", "dask"], None, "--backend 'dask': choose local or ray"),
    (["--backend", "ray", "--address", "ray://head:10001"], None, "Ray Client (ray://) is not supported"),
    (["--backend", "ray", "--address", "nohost"], None, "give auto or HOST:PORT"),
    (["--backend", "ray"], "ray: {num_cpus: 0}", "field 'ray.num_cpus': Input should be greater than 0"),
    (["--backend", "ray"], "ray: {bogus: 1}", "field 'ray.bogus'"),
])
def test_bad_ray_options_are_one_line_before_any_work(ws, tmp_path, args, ray_section, message):
    path = Path(_study_file(ws, tmp_path / "grid.yaml"))
    if ray_section:
        path.write_text(path.read_text() + ray_section + "\n")
    started = time.monotonic()
    result = invoke(["study", path, "--out", tmp_path / "s", *args])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1 and message in result.stderr, result.output
    assert time.monotonic() - started < 10 and not (tmp_path / "s").exists()


def test_an_address_where_no_cluster_answers_is_one_line_in_seconds(ws, tmp_path):
    study = _study_file(ws, tmp_path / "grid.yaml")
    started = time.monotonic()
    result = invoke(["study", study, "--out", tmp_path / "s", "--backend", "ray", "--address",
                     f"127.0.0.1:{free_port()}"])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "no Ray cluster answers there" in result.stderr
    assert time.monotonic() - started < 10 and not (tmp_path / "s").exists()


def test_an_entry_may_ask_for_more_than_any_node_has_and_is_refused(ws, cluster, tmp_path):
    study = yaml.safe_load(Path(_study_file(ws, tmp_path / "grid.yaml")).read_text())
    study["runs"][0]["ray"] = {"num_gpus": 1}
    (tmp_path / "gpu.yaml").write_text(yaml.safe_dump(study))
    result = invoke(["study", tmp_path / "gpu.yaml", "--out", tmp_path / "s", "--backend", "ray", "--address", cluster])
    assert result.exit_code == 2 and result.stderr.count("\n") == 1, result.output
    assert "asks for 1 CPU, 1 GPU but no node of the Ray cluster has that (largest: 2 CPU, 0 GPU)" in result.stderr
    assert not (tmp_path / "s" / "runs").exists()


def test_without_ray_the_backend_says_how_to_install_it(ws, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError
    result = invoke(["study", _study_file(ws, tmp_path / "grid.yaml"), "--out", tmp_path / "s", "--backend", "ray"])
    assert result.exit_code == 2
    assert result.stderr == "error: --backend ray needs Ray: pip install 'editprobe[ray]'\n"
