"""Checks that an event can reach a spawned worker process, and the missing-guard trap.

Spawned workers import the event's module by name. Two situations defeat that and used to
show up only as every task failing with ``BrokenProcessPool``:

* the event lives in a ``__main__`` that cannot be imported again (``python -c``, a script
  read from stdin, an interactive session or notebook);
* a script starts process-pool work at import time, without
  ``if __name__ == "__main__":``: each worker re-imports the script while bootstrapping and
  would start process-pool work of its own. The worker notices (multiprocessing marks that
  phase), exits at once with :data:`MAIN_GUARD_EXIT` and prints nothing; the parent sees the
  exit code when the pool breaks and fails the call with one plain message.
"""

from __future__ import annotations

import os
import sys
import time
from concurrent.futures import Executor
from typing import Any

from .exceptions import ImproperlyConfigured

__all__ = ["MAIN_GUARD_EXIT", "check_main_guard", "check_main_importable", "leave_if_bootstrapping"]

#: The exit status of a worker that found itself re-importing an unguarded script.
MAIN_GUARD_EXIT = 87


def _main_script() -> str:
    main = sys.modules.get("__main__")
    return str(getattr(main, "__file__", None) or "your script")


def check_main_importable(event: type[Any]) -> None:
    """Raise when ``event`` lives in a ``__main__`` that spawned workers cannot import."""
    if event.__module__ != "__main__":
        return
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    path = getattr(main, "__file__", None)
    if spec is not None or (isinstance(path, str) and os.path.isfile(path)):
        return
    raise ImproperlyConfigured(
        f"{event.__name__} cannot be sent to a worker process: it is defined in a __main__ "
        "that worker processes cannot import (python -c, standard input, an interactive "
        "session or notebook); move the event into a module (a .py file) and import it"
    )


def leave_if_bootstrapping() -> None:
    """In a spawned worker still importing the parent's script, exit quietly at once."""
    import multiprocessing

    if getattr(multiprocessing.current_process(), "_inheriting", False):
        sys.stdout.flush()
        os._exit(MAIN_GUARD_EXIT)


def check_main_guard(executor: Executor) -> None:
    """Raise when ``executor`` broke because its workers re-imported an unguarded script."""
    processes = getattr(executor, "_processes", None)
    if not processes:
        return
    workers = list(processes.values())
    # The pool's own thread reaps its dead workers at this very moment; a worker it reaped
    # first shows no exit code for a little while. A broken pool is rare: wait for them.
    deadline = time.monotonic() + 1.0
    codes = [getattr(p, "exitcode", None) for p in workers]
    while None in codes and MAIN_GUARD_EXIT not in codes and time.monotonic() < deadline:
        time.sleep(0.005)
        codes = [getattr(p, "exitcode", None) for p in workers]
    if MAIN_GUARD_EXIT in codes:
        raise RuntimeError(
            f"{_main_script()} starts process-pool work when it is imported, and every worker "
            'process imports it again: put that code under `if __name__ == "__main__":`'
        )
