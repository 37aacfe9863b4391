"""A child process starts with the garbage collector's threshold raised; a long-lived one settles."""

from __future__ import annotations

import gc
import os
import subprocess
from pathlib import Path

from pipeline import startup, supervise


def _child_prints(folder: Path, source: str, timeout: float, **env: str) -> list[str]:
    """What a module of `source`, started as a child through `supervise.start` (as the batch
    process and Prefect's server are), prints, word by word; it must exit 0."""
    (folder / "probe.py").write_text(source, encoding="utf-8")
    path = os.pathsep.join(p for p in (str(folder), os.environ.get("PYTHONPATH", "")) if p)
    environment = {**os.environ, "PYTHONPATH": path, **env}
    environment.pop("PREFECT_API_URL", None)
    child = supervise.start("probe", [], name="probe", env=environment, stdout=subprocess.PIPE)
    assert child.process.stdout is not None
    out = child.process.stdout.read().decode().split()
    assert child.wait(timeout=timeout) == 0
    return out


def test_a_child_starts_with_the_collectors_threshold_raised(tmp_path: Path) -> None:
    out = _child_prints(tmp_path, "import gc\nprint(*gc.get_threshold())\n", timeout=60)
    # the first threshold only: Python 3.14's collector reads the others differently
    assert int(out[0]) == startup.STARTING[0] > gc.get_threshold()[0]


def test_settling_sets_the_interpreters_thresholds_back_and_freezes_the_start(
    monkeypatch,  # type: ignore[no-untyped-def]
) -> None:
    monkeypatch.setattr(startup, "_default", None)
    before = gc.get_threshold()
    gc.collect()
    frozen = gc.get_freeze_count()
    try:
        startup.raise_for_start()
        assert gc.get_threshold()[0] == startup.STARTING[0]
        kept = [[n] for n in range(1000)]  # objects of the start the collector tracks
        startup.settle()
        assert gc.get_threshold() == before
        assert gc.get_freeze_count() >= frozen + len(kept)
        startup.settle()  # twice: nothing more
        assert gc.get_threshold() == before
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_prefects_server_app_is_built_with_the_threshold_raised_and_then_settles(tmp_path: Path) -> None:
    """The embedded server's factory (`pipeline.prefect_app.create_app`, which its uvicorn calls) builds
    Prefect's app under the raised threshold, then sets the interpreter's back: the server of a
    `capture watch` lives for days."""
    out = _child_prints(
        tmp_path,
        "import gc\n"
        "from pipeline import prefect_app\n"
        "raised = gc.get_threshold()[0]\n"
        "app = prefect_app.create_app()\n"
        "print(raised, gc.get_threshold()[0], gc.get_freeze_count() > 10_000, type(app).__name__)\n",
        timeout=120,
        PREFECT_HOME=str(tmp_path / "prefect"),
    )
    assert out == [str(startup.STARTING[0]), str(gc.get_threshold()[0]), "True", "FastAPI"]
