"""Caches that heal (docs/failures.md, "Caches"): a damaged C0 statistic, AlphaEdit projector
or target entry is named in one ``warning:`` line, computed again and replaced, and the edit
equals one made with a clean cache; a failed write of an optional cache (targets, RLEdit's
cached hypernetwork) is one warning and the command goes on (the harness: failure_harness.py).
Each test works on its own copy of a cache filled once by clean edits."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch
from cli_helpers import invoke
from failure_harness import edit_args, safetensors_enospc, ws  # noqa: F401 - ws is a fixture
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from editprobe.models.tiny import tiny_facts

METHODS = ("memit", "alphaedit")


def method_args(ws: dict, out: Path, method: str) -> list[str]:
    args = edit_args(ws, out)
    args[args.index("--method") + 1] = method
    return args


def result_of(out: Path) -> dict:
    """What an edit computed: its report less timings and cache counts, and its deltas."""
    def strip(value):
        if isinstance(value, dict):
            return {k: strip(v) for k, v in value.items() if k not in ("timings", "target_cache")}
        if isinstance(value, list):
            return [strip(v) for v in value]
        return value

    return {"report": strip(json.loads((out / "report.json").read_text())),
            "deltas": load_file(out / "state" / "deltas.safetensors")}


def assert_same(a: dict, b: dict) -> None:
    assert a["report"] == b["report"]
    assert a["deltas"].keys() == b["deltas"].keys()
    for name in a["deltas"]:
        assert torch.equal(a["deltas"][name], b["deltas"][name]), name


def cache_warnings(stderr: str) -> list[str]:
    """The warning lines, less the corpus warning every edit of the tiny workspace prints
    (its corpus is shorter than the tiny hparams' mom2_n_samples)."""
    return [line for line in stderr.splitlines() if line.startswith("warning:") and "C0 corpus" not in line]


@pytest.fixture(scope="module")
def clean(ws, tmp_path_factory):
    """A private cache filled by one clean edit per method, and those edits' results."""
    root = tmp_path_factory.mktemp("clean-cache")
    results = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("EDITPROBE_CACHE", str(root / "cache"))
        for method in METHODS:
            result = invoke(method_args(ws, root / method, method))
            assert result.exit_code == 0, result.output
            results[method] = result_of(root / method)
    return {"cache": root / "cache", "results": results}


@pytest.fixture
def cache(clean, tmp_path, monkeypatch) -> Path:
    """A copy of the clean cache: this test's EDITPROBE_CACHE."""
    copy = tmp_path / "cache"
    shutil.copytree(clean["cache"], copy)
    monkeypatch.setenv("EDITPROBE_CACHE", str(copy))
    return copy


# --- damage ----------------------------------------------------------------------------------------


def truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def retensor(change: Callable[[dict], None]) -> Callable[[Path], None]:
    """Rewrite a safetensors file (its header metadata kept) with ``change`` applied."""
    def damage(path: Path) -> None:
        with safe_open(str(path), framework="pt") as f:
            meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
        change(tensors)
        save_file(tensors, str(path), metadata=meta)

    return damage


def first_nan(tensors: dict) -> None:
    next(iter(sorted(tensors.items())))[1].view(-1)[0] = float("nan")


def shrink(tensors: dict) -> None:
    name = next(iter(tensors))
    tensors[name] = tensors[name][:3, :3].contiguous()


def to_double(tensors: dict) -> None:
    for name in tensors:
        tensors[name] = tensors[name].double()


def rejson(change: Callable[[dict], None]) -> Callable[[Path], None]:
    def damage(path: Path) -> None:
        meta = json.loads(path.read_text())
        change(meta)
        path.write_text(json.dumps(meta))

    return damage


def drop_target_field(path: Path) -> None:
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    result = json.loads(meta["result"])
    del result["loss"]
    save_file(tensors, str(path), metadata={"result": json.dumps(result)})


@dataclass
class Damage:
    id: str
    method: str
    entry: str  # a glob under the cache: the one file damaged
    damage: Callable[[Path], None]
    reason: str  # in the warning line


C0 = "stats/*/*/*/mom2_layer1_*"
PROJ = "stats/*/*/*/proj_layer2_*"
TARGET = "targets/*/*.safetensors"

DAMAGES = [
    Damage("c0-truncated", "memit", f"{C0}.safetensors", truncate, "unreadable"),
    Damage("c0-wrong-shape", "memit", f"{C0}.safetensors", retensor(shrink), "has shape [3, 3], expected [128, 128]"),
    Damage("c0-wrong-dtype", "memit", f"{C0}.safetensors", retensor(to_double), "is float64, expected float32"),
    Damage("c0-nan", "memit", f"{C0}.safetensors", retensor(first_nan), "mom2_sum holds NaN or inf"),
    Damage("c0-metadata-corrupt-json", "memit", f"{C0}.json", lambda p: p.write_text('{"key": {'), "corrupt JSON"),
    Damage("c0-metadata-without-count", "memit", f"{C0}.json", rejson(lambda m: m.pop("count")), "'count'"),
    Damage("c0-tensor-file-missing", "memit", f"{C0}.json",
           lambda p: p.with_suffix(".safetensors").unlink(), ".safetensors is missing"),
    Damage("projector-truncated", "alphaedit", f"{PROJ}.safetensors", truncate, "unreadable"),
    Damage("projector-nan", "alphaedit", f"{PROJ}.safetensors", retensor(first_nan), "P holds NaN or inf"),
    Damage("projector-info-without-dim", "alphaedit", f"{PROJ}.json", rejson(lambda m: m["info"].pop("dim")),
           "'info'"),
    Damage("target-truncated", "memit", TARGET, truncate, "unreadable"),
    Damage("target-nan", "memit", TARGET, retensor(first_nan), "holds NaN or inf"),
    Damage("target-wrong-shape", "memit", TARGET, retensor(shrink), "has shape [2, 3], expected [2, 64]"),
    Damage("target-metadata-without-loss", "memit", TARGET, drop_target_field, "field 'loss' is missing"),
]


def entry_files(root: Path, damaged: Path) -> list[Path]:
    """The damaged file and, for a statistics entry, its other file."""
    if damaged.parent.parent.name == "targets":
        return [damaged]
    return [damaged.with_suffix(".safetensors"), damaged.with_suffix(".json")]


def assert_restored(cache: Path, clean_cache: Path, damaged: Path) -> None:
    """The entry was replaced by one equal to the clean cache's (tensors equal; metadata
    equal but for the compute time and the layers computed with it)."""
    for path in entry_files(cache, damaged):
        twin = clean_cache / path.relative_to(cache)
        if path.suffix == ".json":
            ignore = ("seconds", "layers_in_pass")
            now, then = json.loads(path.read_text()), json.loads(twin.read_text())
            assert {k: v for k, v in now.items() if k not in ignore} == \
                   {k: v for k, v in then.items() if k not in ignore}
        else:
            now, then = load_file(path), load_file(twin)
            assert now.keys() == then.keys() and all(torch.equal(now[k], then[k]) for k in now)
    assert not list(damaged.parent.glob(".*")), "a lock or temporary file was left behind"


@pytest.mark.parametrize("case", DAMAGES, ids=[d.id for d in DAMAGES])
def test_a_damaged_entry_is_named_recomputed_and_replaced(case: Damage, ws, clean, cache, tmp_path):
    (damaged,) = cache.glob(case.entry)
    case.damage(damaged)
    result = invoke(method_args(ws, tmp_path / "out", case.method))
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.output
    warned = cache_warnings(result.stderr)
    assert len(warned) == 1, result.stderr
    print(f"{case.id}: {warned[0]}")  # the list of messages, with -s
    assert f"warning: {damaged}: damaged cache entry (" in warned[0] and case.reason in warned[0], warned[0]
    assert warned[0].endswith("; computing it again")
    assert_same(result_of(tmp_path / "out"), clean["results"][case.method])
    assert_restored(cache, clean["cache"], damaged)


def test_a_target_cache_that_cannot_be_written_is_a_warning(ws, clean, cache, tmp_path, monkeypatch):
    import editprobe.editing.lte.target_cache as target_cache

    shutil.rmtree(cache / "targets")  # the edit must compute, then write, its targets
    monkeypatch.setattr(target_cache, "save_file", safetensors_enospc)
    result = invoke(method_args(ws, tmp_path / "out", "memit"))
    assert result.exit_code == 0, result.output
    (warned,) = cache_warnings(result.stderr)
    print(f"target-cache-write-fails: {warned}")
    assert warned.startswith(f"warning: cannot write {cache / 'targets'}/"), warned
    assert warned.endswith(".safetensors: No space left on device; the target cache is optional: going on without "
                           "this entry"), warned
    assert_same(result_of(tmp_path / "out"), clean["results"]["memit"])
    assert not list((cache / "targets").rglob("*.safetensors")) and not list((cache / "targets").rglob(".*"))


# --- RLEdit's cached hypernetwork -------------------------------------------------------------------


def training_file(path: Path) -> Path:
    by_template: dict[str, list[str]] = {}
    for template, _, answer in tiny_facts(0):
        by_template.setdefault(template, []).append(answer)
    records = []
    for i, (template, subject, answer) in enumerate(tiny_facts(0)[:40]):
        new = next(x for x in sorted(set(by_template[template])) if x != answer)
        rewrite = {"prompt": template, "subject": subject, "target_new": {"str": new}, "target_true": {"str": answer}}
        records.append({"case_id": i, "requested_rewrite": rewrite})
    path.write_text(json.dumps(records))
    return path


def train_args(ws: dict, tmp: Path, out: Path) -> list[str]:
    data = tmp / "train.json" if (tmp / "train.json").is_file() else training_file(tmp / "train.json")
    return ["train", "rledit", "--model", str(ws["model"]), "--data", str(data), "--exclude", str(ws["data"]),
            "--settings", "tiny", "--set", "n_steps=2", "--set", "batch_size=4", "--out", str(out), "--threads", "1"]


def test_an_rledit_cached_copy_that_cannot_be_written_is_a_warning(ws, cache, tmp_path, monkeypatch):
    import editprobe.editing.rledit.hypernet as hypernet

    real = hypernet.save_file

    def full_cache_disk(tensors, filename, *args, **kwargs):
        if str(filename).startswith(str(cache)):
            safetensors_enospc()
        return real(tensors, filename, *args, **kwargs)

    monkeypatch.setattr(hypernet, "save_file", full_cache_disk)
    out = tmp_path / "t"
    result = invoke(train_args(ws, tmp_path, out))
    assert result.exit_code == 0, result.output
    (warned,) = cache_warnings(result.stderr)
    print(f"rledit-cached-copy-write-fails: {warned}")
    assert warned.startswith(f"warning: cannot write {cache / 'rledit'}/") and "No space left on device" in warned
    assert f"the network is in {out / 'hypernet'}, pass --set hypernet={out / 'hypernet'}" in warned, warned
    assert (out / "hypernet" / "hypernet.safetensors").is_file()
    assert json.loads((out / "training.json").read_text())["cached"] is None
    assert not (cache / "rledit").exists() or not list((cache / "rledit").rglob("hypernet.*"))
    assert "not cached: see the warning" in result.stdout


def test_a_damaged_rledit_cached_copy_is_replaced_by_the_next_training(ws, cache, tmp_path):
    first = invoke(train_args(ws, tmp_path, tmp_path / "t1"))
    assert first.exit_code == 0, first.output
    cached = Path(json.loads((tmp_path / "t1" / "training.json").read_text())["cached"])
    truncate(cached / "hypernet.safetensors")
    again = invoke(train_args(ws, tmp_path, tmp_path / "t2"))
    assert again.exit_code == 0, again.output
    (warned,) = cache_warnings(again.stderr)
    print(f"rledit-cached-copy-damaged: {warned}")
    assert warned.startswith(f"warning: {cached}: damaged cache entry (not a trained RLEdit hypernetwork (")
    assert warned.endswith("; replacing it with this training's network"), warned
    assert (cached / "hypernet.safetensors").read_bytes() == (tmp_path / "t2" / "hypernet" /
                                                              "hypernet.safetensors").read_bytes()


def test_a_run_that_finds_a_damaged_default_rledit_network_says_how_to_train_it_again(ws, cache, tmp_path,
                                                                                       monkeypatch):
    from editprobe.editing.settings import model_keys as keys_model
    from editprobe.editing.lte.covariance import model_fingerprint
    from editprobe.editing.rledit.hypernet import resolve_settings
    from editprobe.editing.rledit.store import DEFAULT_DATA, DEFAULT_EXCLUDE, cached_path, training_key
    from editprobe.models import load_model

    monkeypatch.setitem(keys_model.KNOWN_MODELS, str(ws["model"]), "tiny")  # its shipped settings: tiny.yaml
    fingerprint = model_fingerprint(load_model(str(ws["model"])).model)
    path = cached_path(fingerprint, training_key(fingerprint, resolve_settings("tiny"), DEFAULT_DATA, DEFAULT_EXCLUDE))
    path.mkdir(parents=True)
    (path / "hypernet.json").write_text('{"version": 1, "settings": ')
    (path / "hypernet.safetensors").write_bytes(b"")
    result = invoke(["edit", "--model", str(ws["model"]), "--method", "rledit", "--data", str(ws["data"]), "--n", "2",
                     "--batch-size", "2", "--out", str(tmp_path / "e"), "--hparams", "tiny", "--threads", "1"])
    assert result.exit_code == 2, result.output
    (line,) = [line for line in result.stderr.splitlines() if not line.startswith("warning:")]
    print(f"rledit-default-network-damaged: {line}")
    assert line.startswith("error: rledit needs a trained hypernetwork: the one cached for ") and str(path) in line
    assert f"`editprobe train rledit --model {ws['model']} --out DIR` (that replaces it)" in line, line
    assert not (tmp_path / "e").exists()
