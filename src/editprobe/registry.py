"""One registry type for every kind of plug-in (methods, model adapters, dataset formats,
probes, study backends), with one set of rules:

- a thing registers where it is defined (a decorator or a call beside its definition);
- registering the same object (or an equal one) again under its name is a no-op;
- a different object under a taken name is an error unless ``replace=True``: two meanings
  under one name would make stored results ambiguous;
- looking up an unknown name raises :class:`UnknownNameError`, which lists the known names;
- iteration follows registration order (``first=True`` puts an entry before the others,
  e.g. a user's dataset format that detection should try first);
- a registry of classes may name their ``base`` (lm-evaluation-harness's ``base_cls``) and
  the class attributes each must set: what does not subclass it, leaves one unset or leaves
  an abstract method unimplemented is refused when it registers, not when a run reaches it.

A user's plug-ins (a method, an adapter, a dataset format, a probe, a study backend) register
when their module is imported. The command line (and each Ray worker of a study) imports the
modules named in the ``EDITPROBE_PLUGINS`` environment variable (comma-separated module
names) before it does anything else: :func:`load_plugins`. The how-to pages (docs/howto/) use
it.
"""

from __future__ import annotations

import importlib
import inspect
import os
from collections.abc import Callable, Iterator, Mapping
from typing import Generic, TypeVar

from .errors import UserError, quoted

T = TypeVar("T")


class RegistryError(UserError, ValueError):
    """A name already taken by a different object."""


class PluginError(UserError, ImportError):
    """A module named in ``EDITPROBE_PLUGINS`` that cannot be imported."""


PLUGINS_ENV = "EDITPROBE_PLUGINS"


def load_plugins(names: str | None = None) -> list[str]:
    """Import the plug-in modules named in ``names`` (default: ``$EDITPROBE_PLUGINS``),
    comma-separated; importing a module registers what it defines. Importing one again is a
    no-op (Python caches modules). Returns the names imported."""
    spec = os.environ.get(PLUGINS_ENV, "") if names is None else names
    modules = [name.strip() for name in spec.split(",") if name.strip()]
    for name in modules:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise PluginError(f"{PLUGINS_ENV}: cannot import {name!r}: {exc} (is its directory on PYTHONPATH?)") \
                from None
    return modules


class UnknownNameError(UserError, KeyError):
    """A lookup of a name nobody registered; the message lists the registered ones."""

    def __str__(self) -> str:  # KeyError would quote the whole message
        return str(self.args[0])


class Registry(Mapping[str, T], Generic[T]):
    def __init__(self, kind: str, key: Callable[[T], str] | None = None, file_names: bool = False,
                 base: type | None = None, required: tuple[str, ...] = ()) -> None:
        self.kind = kind  # "method", "model adapter", ... for messages
        self._key = key  # how an object names itself, for register(obj) without a name
        self._file_names = file_names  # names become parts of file names (a run's stage files)
        self._base = base  # entries are subclasses of it (None: any object)
        self._required = required  # class attributes every entry sets (with a base only)
        self._items: dict[str, T] = {}

    # --- registering ------------------------------------------------------------------------------
    def register(self, obj: T, name: str | None = None, *, replace: bool = False, first: bool = False) -> T:
        """Add ``obj`` under ``name`` (default: the registry's key of ``obj``); returns ``obj``,
        so it works as a decorator."""
        self._check_type(obj)
        if name is None:
            if self._key is None:
                raise TypeError(f"the {self.kind} registry needs a name")
            name = self._key(obj)
        if self._file_names and (not name.strip() or "/" in name or "\\" in name or name.startswith(".")):
            raise RegistryError(f"{self.kind} name {name!r}: must be a non-empty name without '/', '\\' or a "
                                "leading '.'")
        old = self._items.get(name)
        if old is not None and not replace and old is not obj and old != obj:
            raise RegistryError(f"{self.kind} {name!r} is already registered as a different {self.kind}; "
                                "pass replace=True to replace it, or choose another name")
        if first:
            self._items = {name: obj, **{k: v for k, v in self._items.items() if k != name}}
        else:
            self._items[name] = obj
        return obj

    def _check_type(self, obj: object) -> None:
        """With a ``base``: ``obj`` is a complete subclass of it (one line saying what is not)."""
        if self._base is None:
            return
        what = f"{self.kind} {getattr(obj, '__qualname__', repr(obj))}"
        if not (isinstance(obj, type) and issubclass(obj, self._base)):
            raise RegistryError(f"{what}: not a subclass of {self._base.__module__}.{self._base.__qualname__}")
        unset = [attr for attr in self._required if getattr(obj, attr, None) is None]
        if unset:
            raise RegistryError(f"{what}: does not set {', '.join(unset)}")
        if inspect.isabstract(obj):
            raise RegistryError(f"{what}: does not implement {', '.join(sorted(obj.__abstractmethods__))}")

    def unregister(self, name: str) -> T | None:
        return self._items.pop(name, None)

    def pop(self, name: str, default: T | None = None) -> T | None:
        """dict-style removal (tests clean up with it)."""
        return self._items.pop(name, default)

    # --- looking up -------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> T:
        try:
            return self._items[name]
        except KeyError:
            known = ", ".join(sorted(self._items)) or "none"
            raise UnknownNameError(f"unknown {self.kind} {quoted(name)}; registered: {known}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {list(self._items)})"
