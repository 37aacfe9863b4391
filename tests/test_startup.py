"""A child process starts with the garbage collector's threshold raised; a long-lived one settles."""

from __future__ import annotations

import gc
import os
import subprocess

from pipeline import startup, supervise


def test_a_child_starts_with_the_collectors_threshold_raised(tmp_path) -> None:  # type: ignore[no-untyped-def]
    (tmp_path / "gc_probe.py").write_text("import gc\nprint(*gc.get_threshold())\n", encoding="utf-8")
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)
    child = supervise.start(
        "gc_probe", [], name="probe", env={**os.environ, "PYTHONPATH": path}, stdout=subprocess.PIPE
    )
    assert child.process.stdout is not None
    out = child.process.stdout.read().decode()
    assert child.wait(timeout=60) == 0
    assert tuple(int(n) for n in out.split()) == startup.STARTING
    assert startup.STARTING[0] > gc.get_threshold()[0]


def test_settling_sets_the_interpreters_thresholds_back_and_freezes_the_start() -> None:
    before = gc.get_threshold()
    frozen = gc.get_freeze_count()
    try:
        startup.raise_for_start()
        assert gc.get_threshold() == startup.STARTING
        kept = [object() for _ in range(10)]  # noqa: F841 - objects of the start
        startup.settle()
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() > frozen
        startup.settle()  # twice: nothing more
        assert gc.get_threshold() == before
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
