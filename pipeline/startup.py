"""The cyclic garbage collector while a child process starts.

Importing Prefect's server or its flow engine builds hundreds of thousands of objects (pydantic
models, FastAPI routes, SQLAlchemy tables), none of them garbage, and Python's default first
threshold (700 allocations) had the collector walk them again and again. A child started by
`pipeline.supervise.start` begins with the threshold raised (`raise_for_start`) and sets the
defaults back once its imports are done (`settle`), with what it has built so far frozen out of
later collections: the batch process after importing its flow, Prefect's server once its app
is built (`pipeline.prefect_app`). Measured in benchmarks/README.md.
"""

from __future__ import annotations

import gc

STARTING = (50_000, 50, 100)
_default: tuple[int, int, int] | None = None


def raise_for_start() -> None:
    global _default
    if _default is None:
        _default = gc.get_threshold()
    gc.set_threshold(*STARTING)


def settle() -> None:
    """Back to the interpreter's own thresholds, the objects of the start frozen (gc.freeze:
    they stay, and later collections no longer walk them). Nothing to do if the threshold was
    never raised.

    The start's own cyclic garbage is frozen with it (about 0.3 MB measured in the batch
    process, imports and an engine load; collecting it first cost 80 ms): kept for the life of
    a process that ends with its batch. An object made before this and held in a cycle is
    never freed: an OCR engine (whose RapidOCR refers back to it) must not be replaced in a
    settled process, which today's pools never do."""
    global _default
    if _default is None:
        return
    gc.freeze()
    gc.set_threshold(*_default)
    _default = None
