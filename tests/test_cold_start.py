"""A cold `capture search` imports only what searching needs; the store skips Alembic when current.

No timing is asserted (benchmarks/cold.py measures it): these tests catch the regressions that
made a cold search slow, a heavy module pulled into the search path or the schema upgrade run
on every open, by what the process imported.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import text

from pipeline.store import MIGRATIONS, Store
from pipeline.store.base import at_head, head_revision

# The batch, OCR, imaging, packaging, web and server stacks: none of them answers a search.
NOT_FOR_SEARCH = (
    "prefect",
    "cv2",
    "numpy",
    "rapidocr",
    "rapidocr_onnxruntime",
    "openvino",
    "onnxruntime",
    "pytesseract",
    "PIL",
    "pikepdf",
    "fastapi",
    "starlette",
    "uvicorn",
    "jinja2",
    "elasticsearch",
    "openpyxl",
    "alembic",
    "pipeline.flows",
    "pipeline.ocr",
    "pipeline.imaging",
    "pipeline.package",
    "pipeline.web",
)


def _imported(stderr: str) -> set[str]:
    """Module names from `python -X importtime` output."""
    names = set()
    for line in stderr.splitlines():
        if line.startswith("import time:") and "|" in line:
            names.add(line.rsplit("|", 1)[1].strip())
    return names


def _home_with_one_page(home: Path) -> None:
    from pipeline.index.base import IndexItem, IndexPage
    from pipeline.index.sqlite import SqliteIndex

    index = SqliteIndex(home / "index.sqlite")
    index.index_item(IndexItem("A-1", "理赔申请书", {"year": "2014"}, (IndexPage(2, "理賠申請書 事故經過"),)))
    index.close()
    Store(home / "state.sqlite").close()  # the state database exists, at the newest migration


def test_a_cold_search_imports_no_batch_ocr_web_or_migration_stack(tmp_path: Path) -> None:
    home = tmp_path / "home"
    _home_with_one_page(home)
    result = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "pipeline.cli", "search", "理赔申请", "--json"],
        capture_output=True,
        text=True,
        env={**os.environ, "CAPTURE_HOME": str(home)},
        timeout=120,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    hits = json.loads(result.stdout)["hits"]
    assert [(h["archive_code"], h["page"]) for h in hits] == [("A-1", 2)]
    imported = _imported(result.stderr)
    assert "pipeline.cli.search" in imported and "sqlite3" in imported  # the parse saw the imports
    heavy = sorted(n for n in imported if any(n == m or n.startswith(m + ".") for m in NOT_FOR_SEARCH))
    assert heavy == [], heavy
    others = {"pipeline.cli.batch", "pipeline.cli.lifecycle", "pipeline.cli.serve", "pipeline.cli.disposal"}
    assert not imported & others  # only the command's own module is loaded
    with Store(home / "state.sqlite").session() as session:  # and the search was still audited
        actions = session.execute(text("SELECT action FROM audit_log")).scalars().all()
    assert "search" in actions


def test_every_command_is_loaded_from_the_module_that_registers_it() -> None:
    from pipeline.cli import COMMAND_MODULES, app

    seen = {}
    for command in app.registered_commands:
        assert command.callback is not None
        name = command.name or command.callback.__name__.replace("_", "-")
        seen[name] = {command.callback.__module__}
    for group in app.registered_groups:
        assert group.typer_instance is not None and group.name
        seen[group.name] = {
            c.callback.__module__ for c in group.typer_instance.registered_commands if c.callback
        }
    assert seen == {name: {f"pipeline.cli.{module}"} for name, module in COMMAND_MODULES.items()}


def test_help_still_lists_every_command(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", "--help"],
        capture_output=True,
        text=True,
        env={**os.environ, "CAPTURE_HOME": str(tmp_path / "home"), "COLUMNS": "200"},
        timeout=120,
    )
    assert result.returncode == 0
    from pipeline.cli import COMMAND_MODULES

    for name in COMMAND_MODULES:
        assert f" {name} " in result.stdout, name


def test_the_head_revision_read_from_file_names_is_alembics() -> None:
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert head_revision() == ScriptDirectory.from_config(config).get_current_head()


def test_a_database_one_migration_behind_is_still_upgraded(database_url: str) -> None:
    from alembic import command
    from alembic.config import Config

    store = Store(database_url)
    assert at_head(store.engine)
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    with store.engine.begin() as connection:
        config.attributes["connection"] = connection
        command.downgrade(config, "-1")
    assert not at_head(store.engine)
    store.close()
    again = Store(database_url)
    with again.engine.connect() as connection:
        version = connection.execute(text("SELECT version_num FROM alembic_version")).scalar()
    assert version == head_revision() and at_head(again.engine)
    again.close()
