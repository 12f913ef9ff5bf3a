"""Every shipped hyperparameter file validates and cites its source."""

import pytest

from editprobe.editing import lte_methods
from editprobe.editing.hparams import HPARAMS_DIR, available
from editprobe.editing.registry import resolve_hparams

FILES = [(m, key) for m in lte_methods() for key in available(m)]


@pytest.mark.parametrize("method,key", FILES)
def test_shipped_hparams_validate(method, key):
    hp = resolve_hparams(method, key)
    assert hp.method == method
    assert hp.source, f"{method}/{key}.yaml must cite its source"
    assert hp.layers == sorted(hp.layers)


def test_every_method_has_real_model_settings():
    for method in ("rome", "memit", "emmet", "alphaedit"):
        keys = set(available(method))
        assert {"gpt2-xl", "gpt-j-6b", "llama3-8b-instruct", "qwen2.5-7b-instruct", "tiny"} <= keys, method
    assert (HPARAMS_DIR / "memit" / "smollm2-135m.yaml").exists()
