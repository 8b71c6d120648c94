"""neurodocker's `reproenv` (renderers, templates, state), imported without registering all of neurodocker's templates.

`import neurodocker` runs `neurodocker/__init__.py`, which reads every one of
its templates and checks each against the template JSON schema, then adds it to
reproenv's class-level registry: about 0.3 s of CPU, most of a cold render, for
templates a render never names (ndgen passes templates to `Template()` as data,
never through that registry, and `Template()` validates each one it is given).

`module()` imports the submodules the documented way of importing a package's
parts without running its `__init__`: the package module is made from its spec
(`importlib.util.module_from_spec`, which sets `__path__`) and put in
`sys.modules`, unexecuted, only while a submodule loads, so `neurodocker.reproenv.*`
load from the installed package as usual. The code is neurodocker's, imported, not
copied. The stand-in is gone afterwards: anyone's later `import neurodocker` (a
test, a Python API user, `import_all()`) runs neurodocker's `__init__` as always,
which registers its templates in the same reproenv modules.

Code that needs neurodocker's global registry calls `register()` with the
templates it uses (each validated by reproenv's schema as neurodocker's import
does), or `import_all()` for all of them.

Every ndgen module imports neurodocker through here (tests/core/test_reproenv.py
checks it); `upstream/probe.py` is the exception: it runs in its own interpreter
to import a neurodocker work tree exactly as upstream does.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

from neurodocker_nd.errors import NdgenError

PACKAGE = "neurodocker"
# One import of neurodocker's modules at a time.  reproenv's modules import each other, and two
# threads importing two of them at once take CPython's per-module import locks in opposite orders
# (_DeadlockError, or a half-made module: `cannot import name … from partially initialized module`);
# the stand-in package below must not be seen, or removed, by another thread's import either.
_IMPORTING = threading.RLock()


def _new_lock_after_fork() -> None:
    # A forked child (render.template_sandbox's workers, forked from fleet run's threads) has one
    # thread: a lock another thread held at the fork would never be released there.
    global _IMPORTING
    _IMPORTING = threading.RLock()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_lock_after_fork)


def _spec():
    spec = importlib.util.find_spec(PACKAGE)  # a top-level name: imports nothing
    if spec is None or spec.submodule_search_locations is None:
        raise NdgenError("neurodocker is not installed (pip install neurodocker==2.1.2)")
    return spec


class _DeferredModule(ModuleType):
    """Stands in `sys.modules` for a module not imported yet; the first attribute read imports it.

    importlib's LazyLoader would be the documented tool, but on Python 3.11 a second
    `import jsonschema` statement (reproenv/state.py's) reads `__spec__` and so loads it.
    Here `__spec__` is an ordinary attribute; any other name imports the real module,
    which then replaces this one in `sys.modules` (modules that imported this object
    keep it, and reach the real one through it).
    """

    def __getattr__(self, name: str) -> Any:
        # One thread at a time, and always through import_module, which waits while another
        # thread's import of the real module runs: `fleet run`'s workers reading through this
        # object at once got a half-made jsonschema ("has no attribute 'validators'").
        with _IMPORTING:
            if sys.modules.get(self.__name__) is self:
                del sys.modules[self.__name__]
            real = importlib.import_module(self.__name__)
        return getattr(real, name)


def _defer_jsonschema() -> None:
    """Import jsonschema (at the top of reproenv/state.py) only when something uses it.

    It costs ~0.15 s of CPU to import and is needed only when a template is actually
    checked, which core.schemamemo spares for templates that passed before.
    """
    if "jsonschema" in sys.modules:
        return
    spec = importlib.util.find_spec("jsonschema")
    if spec is None:
        return  # neurodocker's own import will say what is missing
    stand_in = _DeferredModule("jsonschema")
    stand_in.__spec__ = spec
    sys.modules["jsonschema"] = stand_in


def module(name: str) -> ModuleType:
    """`neurodocker.<name>` (e.g. "reproenv.renderers"), without running the package's `__init__`
    unless something imported `neurodocker` itself already."""
    full = f"{PACKAGE}.{name}"
    loaded = sys.modules.get(full)
    if loaded is not None and not _initialising(loaded):
        return loaded
    with _IMPORTING:
        if PACKAGE in sys.modules:
            return importlib.import_module(full)
        _defer_jsonschema()
        stand_in = importlib.util.module_from_spec(_spec())  # __path__, __file__, __spec__; nothing executed
        sys.modules[PACKAGE] = stand_in
        try:
            return importlib.import_module(full)
        finally:
            if sys.modules.get(PACKAGE) is stand_in:
                del sys.modules[PACKAGE]


def _initialising(module: ModuleType) -> bool:
    """Another thread is still running this module's code (it is in sys.modules from the start)."""
    spec = getattr(module, "__spec__", None)
    return bool(getattr(spec, "_initializing", False))


def version() -> str:
    """The installed neurodocker's version."""
    return str(module("_version").__version__)


def package_dir() -> Path:
    """The installed neurodocker package's directory (its `templates/`, `reproenv/schemas/`)."""
    return Path(_spec().origin or "").parent


def template_schema_path() -> Path:
    """reproenv's template JSON schema, which `Template()` and `register()` check against."""
    return package_dir() / "reproenv" / "schemas" / "template.json"


def register(templates: Iterable[Path | tuple[str, Mapping[str, Any]]]) -> tuple[str, ...]:
    """Add these templates (files, or (name, template data)) to reproenv's global registry.

    For code that hands neurodocker template *names* (`Renderer.from_dict`,
    `add_registered_template`, neurodocker's CLI options): only the templates it
    uses. Each is validated against reproenv's template schema on the way in, as
    neurodocker's import does for all of them. Returns the registered names.
    """
    register_template = module("reproenv.state").register_template
    exceptions = module("reproenv.exceptions")
    names = []
    for item in templates:
        where, data, name = (str(item), item, None) if isinstance(item, Path) else (item[0], dict(item[1]), item[0])
        try:
            registered = register_template(data, name=name)
        except (exceptions.TemplateError, ValueError, OSError) as exc:
            raise NdgenError(f"{where}: {exc}") from None
        names.append(str(registered["name"]) if name is None else name)
    return tuple(names)


def import_all() -> ModuleType:
    """neurodocker as `import neurodocker` makes it: its `__init__` run, every template registered
    (into the reproenv modules already loaded, which stay the ones in use)."""
    with _IMPORTING:
        return importlib.import_module(PACKAGE)


def deferred() -> bool:
    """True while neurodocker's `__init__` (the registration of all its templates) has not run."""
    return PACKAGE not in sys.modules
