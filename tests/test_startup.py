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
    # the first threshold only: Python 3.14's collector reads the others differently
    assert int(out.split()[0]) == startup.STARTING[0] > gc.get_threshold()[0]


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


def test_prefects_server_app_is_built_with_the_threshold_raised_and_then_settles(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The embedded server's factory (uvicorn --factory pipeline.prefect_app:create_app) builds
    Prefect's app under the raised threshold, then sets the interpreter's back: the server of a
    `capture watch` lives for days."""
    (tmp_path / "app_probe.py").write_text(
        "import gc\n"
        "from pipeline import prefect_app\n"
        "raised = gc.get_threshold()[0]\n"
        "app = prefect_app.create_app()\n"
        "print(raised, gc.get_threshold()[0], gc.get_freeze_count() > 10_000, type(app).__name__)\n",
        encoding="utf-8",
    )
    path = os.pathsep.join(p for p in (str(tmp_path), os.environ.get("PYTHONPATH", "")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PREFECT_HOME": str(tmp_path / "prefect")}
    env.pop("PREFECT_API_URL", None)
    child = supervise.start("app_probe", [], name="probe", env=env, stdout=subprocess.PIPE)
    assert child.process.stdout is not None
    out = child.process.stdout.read().decode().split()
    assert child.wait(timeout=120) == 0
    assert out == [str(startup.STARTING[0]), str(gc.get_threshold()[0]), "True", "FastAPI"]
