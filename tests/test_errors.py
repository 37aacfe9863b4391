"""One error tree, one CLI handler: every class drawn with its exit code, no traceback for bad input."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import pipeline.errors as errors

CAPTURE = [sys.executable, "-m", "pipeline.cli"]


def _import_every_module() -> None:
    """So that an error class defined anywhere in the package is seen."""
    import importlib
    import pkgutil

    import pipeline

    for module in pkgutil.walk_packages(pipeline.__path__, "pipeline."):
        if not module.name.endswith("__main__") and ".migrations" not in module.name:
            importlib.import_module(module.name)


def test_the_docstring_draws_every_class_with_its_exit_code_and_status() -> None:
    _import_every_module()
    drawn = {}
    for line in (errors.__doc__ or "").splitlines():
        words = line.replace("├──", " ").replace("└──", " ").replace("│", " ").split()
        if words and words[0] in {c.__name__ for c in errors.all_errors()}:
            drawn[words[0]] = (words[1], words[2])
    classes = {c.__name__: c for c in errors.all_errors()}
    assert set(drawn) == set(classes)
    for name, cls in classes.items():
        exit_code, status = drawn[name]
        if exit_code != "-":
            assert int(exit_code) == cls.exit_code, name
        if status != "-":
            assert int(status) == cls.http_status, name
    codes = {c.exit_code for c in classes.values() if drawn[c.__name__][0] != "-"}
    assert errors.INTERNAL_ERROR_EXIT not in codes


def _capture(home: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CAPTURE_HOME": str(home), "CAPTURE_USER": "tester"}
    return subprocess.run(
        [*CAPTURE, *args], input=stdin, capture_output=True, text=True, env=env, timeout=120
    )


def _cursor(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.fixture(scope="module")
def home_with_index(tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    from pipeline.index.base import IndexItem, IndexPage
    from pipeline.index.sqlite import SqliteIndex

    home = tmp_path_factory.mktemp("errors") / "home"
    index = SqliteIndex(home / "index.sqlite")
    index.index_item(IndexItem("A-1", "投保单", {"year": "2012"}, (IndexPage(1, "養老保險待遇核定表"),)))
    index.close()
    return home


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["search", "保险", "--cursor", _cursor({"o": 2**63})], 2, "cursor"),
        (["search", "保险", "--cursor", "%%%not-base64"], 2, "cursor"),
        (["search", "保险", "--cursor", _cursor(["o"])], 2, "cursor"),
        (["search", "保险", "--page", str(2**62)], 2, "offset"),
        (["search", "保" * 300], 2, "at most 200"),
        (["search", "保险", "--as-user", "nobody"], 7, "no active user"),
        (["qa", "approve", "../../etc", "--reason", "x"], 9, "no item"),
        (["qa", "show", "A-1", "--as-user", "nobody"], 7, "nobody"),
        (["qa", "correct", "A-1", "--pages", "3", "--reason", "x"], 9, "no item"),
        (["user", "add", "bad name", "--role", "searcher"], 2, "without spaces"),
        (["user", "add", "ok", "--clearance", "²"], 2, "unknown security level"),
        (["user", "disable", "ghost"], 2, "no user"),
        (["catalogue", "import", "/nonexistent/catalogue.csv"], 3, "no such catalogue"),
        (["run", "/nonexistent/batch"], 4, "does not exist"),
    ],
)
def test_bad_input_gets_a_message_and_an_exit_code_never_a_traceback(
    home_with_index, args, code, words
) -> None:  # type: ignore[no-untyped-def]
    result = _capture(home_with_index, *args)
    assert result.returncode == code, result.stdout + result.stderr
    assert words in result.stderr and "Traceback" not in result.stderr + result.stdout
    assert result.stderr.startswith("error:")


def test_a_bad_setting_is_named_at_start(tmp_path: Path) -> None:
    env_file = tmp_path / "office.toml"
    env_file.write_text("[ocr]\nworkrs = 3\n", encoding="utf-8")
    result = subprocess.run(
        [*CAPTURE, "search", "保险"],
        capture_output=True,
        text=True,
        env={**os.environ, "CAPTURE_HOME": str(tmp_path / "h"), "CAPTURE_CONFIG": str(env_file)},
        timeout=120,
    )
    assert result.returncode == 2 and "ocr.workrs" in result.stderr and "Traceback" not in result.stderr


def test_markup_in_outside_text_is_printed_as_text(tmp_path: Path) -> None:
    catalogue = tmp_path / "c.csv"
    catalogue.write_text("档号,页数,题名\r\n[bold]A-1,2,x\r\nB-1,[/b],y\r\n", encoding="utf-8")
    result = _capture(tmp_path / "home", "catalogue", "import", str(catalogue))
    assert result.returncode == 3 and "Traceback" not in result.stderr
    assert "[bold]A-1" in result.stderr and "[/b]" in result.stderr
