"""Every shipped hyperparameter file validates, cites its source and edits layers the model
it names has; the validator refuses layer lists the engine cannot use."""

import pytest

from editprobe.editing import METHODS, lte_methods
from editprobe.editing.settings.hparams import HPARAMS_DIR, HParamsError, available
from editprobe.editing.registry import resolve_hparams
from editprobe.models.tiny import TINY

FILES = [(m, key) for m in lte_methods() for key in available(m)]
EVERY_FILE = [(m, key) for m in METHODS for key in available(m)]

# Decoder layers of the model each file key names (num_hidden_layers / n_layer of its config.json
# on the hub). A file for a model not listed here fails below: add the model with its count.
MODEL_LAYERS = {
    "gpt2-xl": 48,
    "gpt-j-6b": 28,
    "llama3-8b-instruct": 32,
    "qwen2.5-7b-instruct": 28,
    "smollm2-135m": 30,
    "tiny": TINY["layers"],
}


@pytest.mark.parametrize("method,key", FILES)
def test_shipped_hparams_validate(method, key):
    hp = resolve_hparams(method, key)
    assert hp.method == method
    assert hp.source, f"{method}/{key}.yaml must cite its source"


@pytest.mark.parametrize("method,key", EVERY_FILE)
def test_shipped_layers_exist_in_the_model_the_file_names(method, key):
    model = key.split("@")[0]  # "smollm2-135m@zsre": the model's settings for one dataset
    assert model in MODEL_LAYERS, f"{method}/{key}.yaml: add {model!r} and its layer count to MODEL_LAYERS"
    n_layers = MODEL_LAYERS[model]
    hp = resolve_hparams(method, key)
    layers = getattr(hp, "layers", None) or []  # IKE and RLEdit name no layers
    outside = [l for l in layers if not 0 <= l < n_layers]
    assert not outside, f"{method}/{key}.yaml: layers {outside} outside {model}'s 0..{n_layers - 1}"
    hp.check_model(n_layers)  # the editor's own check agrees


@pytest.mark.parametrize("layers, message", [
    ([6, 5], "strictly increasing"),
    ([4, 4], "strictly increasing"),
    ([], "at least one layer"),
])
def test_layers_out_of_order_are_refused(tmp_path, layers, message):
    path = tmp_path / "memit.yaml"
    path.write_text(f"method: memit\nsource: test\nlayers: {layers}\n")
    with pytest.raises(HParamsError, match=f"layers.*{message}"):
        resolve_hparams("memit", path)


def test_layers_the_model_lacks_are_refused():
    hp = resolve_hparams("memit", "smollm2-135m")
    with pytest.raises(HParamsError, match=r"outside the model's layers 0\.\.3"):
        hp.check_model(4)


def test_every_method_has_real_model_settings():
    for method in ("rome", "memit", "emmet", "alphaedit"):
        keys = set(available(method))
        assert {"gpt2-xl", "gpt-j-6b", "llama3-8b-instruct", "qwen2.5-7b-instruct", "tiny"} <= keys, method
    assert (HPARAMS_DIR / "memit" / "smollm2-135m.yaml").exists()
