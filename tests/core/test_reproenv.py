"""core/reproenv.py: neurodocker's reproenv without the registration of all its templates."""

from __future__ import annotations

import ast
import json
import subprocess
import sys

from support import REPO

PACKAGE = REPO / "neurodocker_nd"
# Runs its own interpreter to import a neurodocker work tree exactly as upstream does.
_OWN_IMPORT = {"core/reproenv.py", "upstream/probe.py"}


def _run(code: str) -> dict:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(proc.stdout)


def test_every_neurodocker_import_goes_through_core_reproenv():
    """A plain `from neurodocker… import` anywhere else would run neurodocker's __init__ first."""
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).as_posix()
        if rel in _OWN_IMPORT:
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            offenders += [f"{rel}:{node.lineno}" for n in names if n == "neurodocker" or n.startswith("neurodocker.")]
    assert offenders == []


def test_register_adds_only_the_named_templates_validated():
    out = _run(
        "import json\n"
        "from neurodocker_nd.core import reproenv\n"
        "names = reproenv.register([reproenv.package_dir() / 'templates' / 'ants.yaml', ('mine', {'name': 'mine',"
        " 'url': 'u', 'binaries': {'urls': {'1': 'x'}, 'instructions': 'echo'}})])\n"
        "state = reproenv.module('reproenv.state')\n"
        "try:\n"
        "    reproenv.register([('bad', {'name': 'bad', 'binaries': {'instructions': 1}})])\n"
        "except Exception as exc:\n"
        "    error = f'{type(exc).__name__}: {exc}'\n"
        "print(json.dumps({'names': names, 'registered': sorted(state.registered_templates()), 'error': error,"
        " 'deferred': reproenv.deferred()}))\n"
    )
    assert out["names"] == ["ants", "mine"] and out["registered"] == ["ants", "mine"]
    assert out["error"].startswith("NdgenError: bad: Invalid template: ") and "\n" not in out["error"]
    assert out["deferred"] is True


def test_import_all_runs_neurodockers_own_registration_in_place():
    out = _run(
        "import json\n"
        "from neurodocker_nd.core import reproenv\n"
        "renderers = reproenv.module('reproenv.renderers')\n"
        "before = len(reproenv.module('reproenv.state').registered_templates())\n"
        "package = reproenv.import_all()\n"
        "import neurodocker, neurodocker.reproenv.renderers as again\n"
        "print(json.dumps({'before': before, 'after': len(neurodocker.reproenv.registered_templates()),"
        " 'same': again is renderers and package is neurodocker, 'deferred': reproenv.deferred(),"
        " 'version': neurodocker.__version__ == reproenv.version()}))\n"
    )
    assert out == {"before": 0, "after": 21, "same": True, "deferred": False, "version": True}


def test_an_imported_neurodocker_is_used_as_it_is():
    out = _run(
        "import json, neurodocker\n"
        "from neurodocker_nd.core import reproenv\n"
        "print(json.dumps({'same': reproenv.import_all() is neurodocker, 'deferred': reproenv.deferred(),"
        " 'n': len(reproenv.module('reproenv.state').registered_templates())}))\n"
    )
    assert out == {"same": True, "deferred": False, "n": 21}


def test_a_later_plain_import_of_neurodocker_is_neurodockers_own():
    """ndgen's deferral ends with its own imports: a test or API user importing neurodocker after a
    render gets every template registered, in the reproenv modules the render used."""
    out = _run(
        "import json\n"
        "from neurodocker_nd.core import reproenv\n"
        "state = reproenv.module('reproenv.state')\n"
        "import neurodocker\n"
        "from neurodocker.reproenv import registered_templates\n"
        "print(json.dumps({'n': len(registered_templates()), 'same': neurodocker.reproenv.state is state}))\n"
    )
    assert out == {"n": 21, "same": True}


_RACE = """
import json, sys, threading
from neurodocker_nd.core import reproenv

names = ["reproenv.renderers", "reproenv.state", "reproenv.template", "reproenv.exceptions"]
barrier = threading.Barrier(len(names))
errors = []

def load(name):
    barrier.wait()  # all at once
    try:
        module = reproenv.module(name)
        getattr(module, "__file__")
    except BaseException as exc:
        errors.append(f"{name}: {exc!r}")

threads = [threading.Thread(target=load, args=(name,)) for name in names]
for t in threads:
    t.start()
for t in threads:
    t.join()
renderers = reproenv.module("reproenv.renderers")
print(json.dumps({"errors": errors, "complete": hasattr(renderers, "DockerRenderer"),
                  "stand_in_left": "neurodocker" in sys.modules}))
"""


def test_threads_importing_neurodocker_at_once_get_whole_modules():
    """Four threads asking for four of reproenv's modules at once (as `ndgen fleet run`'s workers
    render): without the lock in reproenv.module, every such run here failed (a _DeadlockError
    from CPython's module locks, or `cannot import name … from partially initialized module`)."""
    for _ in range(5):
        out = subprocess.run([sys.executable, "-c", _RACE], capture_output=True, text=True, timeout=60, check=True)
        assert json.loads(out.stdout) == {"errors": [], "complete": True, "stand_in_left": False}


_DEFERRED_RACE = """
import json, threading
from neurodocker_nd.core import reproenv

stand_in = reproenv.module("reproenv.state").jsonschema  # reproenv/state.py's `jsonschema`, deferred
deferred = type(stand_in).__name__ == "_DeferredModule"
barrier = threading.Barrier(4)
errors = []

def use():
    barrier.wait()  # all at once, as fleet run's workers checking templates
    try:
        stand_in.validators.validator_for
    except BaseException as exc:
        errors.append(repr(exc))

threads = [threading.Thread(target=use) for _ in range(4)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(json.dumps({"deferred": deferred, "errors": errors}))
"""


def test_threads_using_the_deferred_jsonschema_at_once_get_the_whole_module():
    """Before the lock, every run here failed: a half-made jsonschema ("has no attribute
    'validators'", what `ndgen fleet run` reported with a cold schema memo) or a KeyError."""
    for _ in range(5):
        out = subprocess.run(
            [sys.executable, "-c", _DEFERRED_RACE], capture_output=True, text=True, timeout=60, check=True
        )
        assert json.loads(out.stdout) == {"deferred": True, "errors": []}


_FORK_WHILE_HELD = """
import os, sys, threading, time
from neurodocker_nd.core import reproenv

held, release = threading.Event(), threading.Event()

def hold():
    with reproenv._IMPORTING:
        held.set()
        release.wait()

threading.Thread(target=hold, daemon=True).start()
held.wait()
pid = os.fork()  # as a template worker forked while another thread imports
if pid == 0:
    reproenv.module("reproenv.exceptions")  # needs the lock: the holder does not exist in here
    os._exit(0)
deadline = time.monotonic() + 20
while time.monotonic() < deadline:
    done, status = os.waitpid(pid, os.WNOHANG)
    if done:
        print("child exit", os.waitstatus_to_exitcode(status))
        break
    time.sleep(0.05)
else:
    os.kill(pid, 9)
    print("child hung")
release.set()
"""


def test_a_child_forked_while_another_thread_imports_is_not_stuck():
    out = subprocess.run([sys.executable, "-c", _FORK_WHILE_HELD], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "child exit 0", out.stdout + out.stderr
