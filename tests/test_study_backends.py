"""The study backend registry: a backend a plug-in registers is chosen by name with
`editprobe study --backend NAME`, and owns its section of the study file (validated by its
settings model, an entry's over the file's; a bad key is one line naming it). No model runs:
the plug-in records each run finished with its setting."""

from __future__ import annotations

import sys

import pytest
import yaml
from cli_helpers import invoke
from pydantic import ValidationError

from editprobe.studies.study import Study, StudyError, expand
from editprobe.studies.backends.base import BACKENDS

PLUGIN = "study_notes_plugin"
PLUGIN_SOURCE = '''
from pydantic import BaseModel, ConfigDict

from editprobe.studies.backends.base import BACKENDS, StudyBackend


class NoteSettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tag: str = "plain"


@BACKENDS.register
class NoteBackend(StudyBackend):
    """Runs nothing: records every run finished, its tag as the status line's note."""

    name = "notes"
    settings = NoteSettings
    label = " (notes)"

    def run(self, study, runs, on_run=None):
        for run in runs:
            study.set_state(run, "finished", self.settings_of(run).tag)
            if on_run is not None:
                on_run(run, *study.state(run))
        return {run.name: "finished" for run in runs}
'''


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The plug-in module on the path, named in EDITPROBE_PLUGINS; unregistered afterwards."""
    (tmp_path / f"{PLUGIN}.py").write_text(PLUGIN_SOURCE)
    monkeypatch.syspath_prepend(str(tmp_path))
    yield {"EDITPROBE_PLUGINS": PLUGIN}
    BACKENDS.pop("notes")
    sys.modules.pop(PLUGIN, None)


def _study(path, **sections) -> str:
    study = {"defaults": {"n": 2, "batch_size": 2},
             "runs": [{"methods": ["memit"], "datasets": ["counterfact-sample"]},
                      {"methods": ["alphaedit"], "datasets": ["counterfact-sample"], **sections.pop("entry", {})}],
             **sections}
    path.write_text(yaml.safe_dump(study))
    return str(path)


def test_the_built_in_backends_are_registered_local_first():
    assert list(BACKENDS)[:2] == ["local", "ray"]
    assert BACKENDS["ray"].settings is not None and BACKENDS["local"].settings is None


def test_a_plugin_backend_is_chosen_by_name_and_reads_its_own_section(plugin, tmp_path):
    path = _study(tmp_path / "s.yaml", notes={"tag": "file"}, entry={"notes": {"tag": "entry"}})
    result = invoke(["study", path, "--out", tmp_path / "out", "--backend", "notes"], env=plugin)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == f"study {tmp_path / 'out'}: 2 runs (notes)"
    assert lines[1:3] == ["00__smollm2-135m__memit__counterfact-sample__seed0: finished: file",
                          "01__smollm2-135m__alphaedit__counterfact-sample__seed0: finished: entry"]
    assert lines[-1].startswith("all 2 runs finished")


def test_unknown_backends_and_addresses_are_one_line_naming_the_choices(plugin, tmp_path):
    path = _study(tmp_path / "s.yaml")
    result = invoke(["study", path, "--out", tmp_path / "out", "--backend", "dask"], env=plugin)
    assert result.exit_code == 2 and result.stderr == "error: --backend 'dask': choose local, ray or notes\n"
    result = invoke(["study", path, "--out", tmp_path / "out", "--backend", "notes", "--address", "auto"], env=plugin)
    assert result.stderr == "error: --address is for --backend ray (the Ray cluster to run on)\n"
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("sections,message", [
    ({"notes": {"tga": "x"}}, "field 'notes.tga': Extra inputs are not permitted"),
    ({"entry": {"notes": {"tga": "x"}}}, "runs[1].notes: field 'tga': Extra inputs are not permitted"),
    ({"entry": {"notes": "x"}}, "field 'runs.1.notes': Input should be a valid dictionary"),
])
def test_a_bad_key_in_a_backends_section_is_refused_naming_it(plugin, tmp_path, sections, message):
    path = _study(tmp_path / "s.yaml", **sections)
    # Every registered backend's section is checked whichever backend runs the study.
    result = invoke(["study", path, "--out", tmp_path / "out"], env=plugin)
    assert result.exit_code == 2 and result.error_lines == [f"error: {path}: {message}"], result.output
    assert not (tmp_path / "out").exists()


def test_sections_are_validated_by_their_backends_model(plugin, tmp_path):
    __import__(PLUGIN)
    study = Study.model_validate({"runs": [{"methods": ["memit"]}, {"methods": ["rome"], "notes": {"tag": "e"}}],
                                  "notes": {"tag": "f"}, "ray": {"num_cpus": 2}})
    runs = expand(study, tmp_path)
    assert [r.backend_settings["notes"].tag for r in runs] == ["f", "e"]
    assert {r.backend_settings["ray"].num_cpus for r in runs} == {2}
    with pytest.raises(ValidationError, match="notes.tag"):
        Study.model_validate({"runs": [], "notes": {"tag": 1}})
    with pytest.raises(StudyError, match=r"runs\[0\]\.ray: field 'num_gpus'"):
        expand(Study.model_validate({"runs": [{"ray": {"num_gpus": -1}}]}), tmp_path)


def test_only_a_complete_study_backend_registers():
    from editprobe.registry import RegistryError
    from editprobe.studies.backends.base import BACKENDS

    class NotABackend:
        name = "nope"

    with pytest.raises(RegistryError, match="not a subclass of .*StudyBackend"):
        BACKENDS.register(NotABackend)
    assert "nope" not in BACKENDS
