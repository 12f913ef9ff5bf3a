"""One set of registry rules for methods, model adapters, dataset formats and probes."""

from __future__ import annotations

import dataclasses

import pytest

from editprobe.data import DATASET_FORMATS, register_format
from editprobe.editing import METHODS, register_method
from editprobe.editing.lte.methods.memit import MEMITEditor
from editprobe.models import ADAPTERS, register_adapter
from editprobe.probes.registry import DEFINITIONS, ProbeDefinition, register_definition
from editprobe.registry import Registry, RegistryError, UnknownNameError


def test_rules_of_one_registry():
    reg: Registry[str] = Registry("widget", key=str.lower)
    assert reg.register("A") == "A"
    assert reg.register("A") == "A"  # the same again: a no-op
    with pytest.raises(RegistryError, match="widget 'a' is already registered"):
        reg.register("b", name="a")
    assert reg.register("b", name="a", replace=True) == "b" and reg["a"] == "b"
    reg.register("Z", first=True)
    assert list(reg) == ["z", "a"]
    with pytest.raises(UnknownNameError) as info:
        reg["nope"]
    assert str(info.value) == "unknown widget 'nope'; registered: a, z"
    assert isinstance(info.value, KeyError)
    assert reg.unregister("z") == "Z" and "z" not in reg


def test_a_registry_of_classes_holds_complete_subclasses_of_its_base():
    from abc import ABC, abstractmethod

    class Widget(ABC):
        label: str | None = None

        @abstractmethod
        def spin(self) -> None: ...

    class Good(Widget):
        label = "good"

        def spin(self) -> None:
            pass

    reg: Registry[type[Widget]] = Registry("widget", key=lambda cls: cls.label, base=Widget, required=("label",))
    assert reg.register(Good) is Good and reg["good"] is Good
    Unlabelled = type("Unlabelled", (Good,), {"label": None})
    Abstract = type("Abstract", (Widget,), {"label": "abstract"})
    for obj, message in ((object, "widget object: not a subclass of "), ("text", "widget 'text': not a subclass of "),
                         (Unlabelled, "widget Unlabelled: does not set label"),
                         (Abstract, "widget Abstract: does not implement spin")):
        with pytest.raises(RegistryError) as info:
            reg.register(obj)
        assert str(info.value).startswith(message) and "\n" not in str(info.value)
    assert list(reg) == ["good"]


def _every_registry():
    class Mine(MEMITEditor):
        name = "memit"  # a different class under a taken name

    yield "method", METHODS, lambda: register_method(Mine), lambda: register_method(METHODS["memit"])
    other = dataclasses.replace(ADAPTERS["llama"], mlp_out="mlp.other")
    yield "model adapter", ADAPTERS, lambda: register_adapter(other), lambda: register_adapter(ADAPTERS["llama"])
    fmt = dataclasses.replace(DATASET_FORMATS["zsre"], description="another")
    yield "dataset format", DATASET_FORMATS, lambda: register_format(fmt), lambda: register_format(
        DATASET_FORMATS["zsre"], first=False)
    probe = ProbeDefinition(name="negation/PP", label="something else")
    yield "probe definition", DEFINITIONS, lambda: register_definition(probe), lambda: register_definition(
        DEFINITIONS["negation/PP"])


@pytest.mark.parametrize("kind,registry,conflict,same", list(_every_registry()),
                         ids=["methods", "adapters", "formats", "definitions"])
def test_every_registry_follows_the_rules(kind, registry, conflict, same):
    before = list(registry.items())
    same()  # registering the same object again: nothing changes
    assert list(registry.items()) == before
    with pytest.raises(RegistryError, match=f"{kind} .* already registered"):
        conflict()
    assert list(registry.items()) == before
    with pytest.raises(UnknownNameError, match=f"unknown {kind} 'no-such-thing'; registered: "):
        registry["no-such-thing"]
