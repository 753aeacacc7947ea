"""The task registry: each science task's :class:`~skybench.tasks.base.Task`, by name.

A task in this package is one line of :data:`BUILTIN` (imported on first use, so reading a lens track never
imports the photo-z code); a task defined elsewhere (a plug-in, the toy task of the tests) calls
:func:`register`. Either way the class is checked against the contract when it is registered.
"""

from __future__ import annotations

import importlib

from skybench.tasks.base import Task, check_task

BUILTIN = {  # task name -> the package whose ``TASK`` is its Task class
    "lens": "skybench.tasks.lens",
    "photoz": "skybench.tasks.photoz",
    "enhance": "skybench.tasks.enhance",
    "generate": "skybench.tasks.generate",
    "detect": "skybench.tasks.detect",
}
_REGISTERED: dict[str, Task] = {}


def register(cls: type[Task]) -> type[Task]:
    """Check ``cls`` against the contract and register it under ``cls.name`` (usable as a class decorator)."""
    check_task(cls)
    known = _REGISTERED.get(cls.name)
    if known is not None and type(known) is not cls:
        raise ValueError(f"task {cls.name!r} is already registered by {type(known).__qualname__}")
    _REGISTERED[cls.name] = cls()
    return cls


def get_task(name: str) -> Task:
    """The registered task ``name`` (a built-in one is imported and registered on first use)."""
    if name not in _REGISTERED:
        if name not in BUILTIN:
            raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(task_names())}")
        register(importlib.import_module(BUILTIN[name]).TASK)
    return _REGISTERED[name]


def task_names() -> list[str]:
    return sorted(set(BUILTIN) | set(_REGISTERED))
