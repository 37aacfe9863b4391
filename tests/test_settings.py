"""Settings are loaded strictly: every wrong key or value is an error naming it and its source."""

from __future__ import annotations

import os
import tomllib
from pathlib import Path

import pytest
from pydantic import BaseModel, SecretStr, ValidationError

import pipeline.settings as settings_module
from pipeline.errors import ConfigError
from pipeline.settings import (
    DEFAULT_CONFIG,
    IndexSettings,
    OcrSettings,
    Settings,
    load_settings,
    merged,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the variables a test sets (CAPTURE_HOME from conftest stays)."""
    for name in list(os.environ):
        if name.upper().startswith("CAPTURE_") and name != "CAPTURE_HOME":
            monkeypatch.delenv(name)


def _overlay(tmp_path: Path, text: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "office.toml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("CAPTURE_CONFIG", str(path))
    return path


def _config_error() -> str:
    with pytest.raises(ConfigError) as caught:
        load_settings()
    assert caught.value.exit_code == 2
    return str(caught.value)


def test_the_defaults_load() -> None:
    settings = load_settings()
    assert settings.ocr.engine == "rapidocr" and settings.ocr.workers == 2
    assert settings.imaging.max_page_pixels == 36_000_000 and settings.watch.max_attempts == 3


@pytest.mark.parametrize(
    ("toml", "key", "hint"),
    [
        ("[ocr]\nworkrs = 3\n", "ocr.workrs", "ocr.workers"),
        ("[index.elasticsearch]\nhostz = ['http://x:9200']\n", "index.elasticsearch.hostz", "hosts"),
        ("[ocrr]\nworkers = 3\n", "ocrr", "ocr"),
        ("hme = '/tmp/x'\n", "hme", "home"),
    ],
)
def test_an_unknown_key_in_the_config_file_names_file_and_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, toml: str, key: str, hint: str
) -> None:
    path = _overlay(tmp_path, toml, monkeypatch)
    message = _config_error()
    assert str(path) in message and f"unknown setting '{key}'" in message and hint in message


def test_every_unknown_key_is_listed_and_shape_errors_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _overlay(tmp_path, "ocr = 3\n[verify]\nmin_dpy = 1\n[package.jpeg_quality]\nx = 1\n", monkeypatch)
    lines = _config_error().splitlines()
    assert len(lines) == 3
    assert any("'ocr' is a section" in line for line in lines)
    assert any("'verify.min_dpy'" in line for line in lines)
    assert any("'package.jpeg_quality' is a single setting" in line for line in lines)


def test_an_unknown_key_in_default_toml_is_an_error_too(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    default = tmp_path / "default.toml"
    default.write_text(
        DEFAULT_CONFIG.read_text(encoding="utf-8").replace("[web]\n", "[web]\nprot = 80\n"), encoding="utf-8"
    )
    monkeypatch.setattr(settings_module, "DEFAULT_CONFIG", default)
    message = _config_error()
    assert str(default) in message and "'web.prot'" in message


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("CAPTURE_OCR__WORKRS", "unknown setting 'ocr.workrs' (did you mean CAPTURE_OCR__WORKERS?)"),
        ("CAPTURE_OCRX__WORKERS", "unknown setting 'ocrx' (did you mean CAPTURE_OCR__WORKERS?)"),
        ("CAPTURE_INDEX__ELASTICSEARCH__HOST", "'index.elasticsearch.host'"),
        ("CAPTURE_HOME__X", "'home' is a single setting, not a section"),
        ("CAPTURE_OCR__WORKERS__X", "'ocr.workers' is a single setting"),
        ("capture_ocr__workrs", "unknown setting 'ocr.workrs'"),
    ],
)
def test_an_unknown_environment_variable_is_named(
    monkeypatch: pytest.MonkeyPatch, name: str, expected: str
) -> None:
    monkeypatch.setenv(name, "1")
    message = _config_error()
    assert f"environment variable {name}" in message and expected in message


def test_variables_that_are_not_settings_are_left_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name, value in {
        "CAPTURE_USER": "zhang",
        "CAPTURE_ES_URL": "http://127.0.0.1:9200",
        "CAPTURE_TEST_DATABASE_URL": "postgresql+psycopg://x@y/z",
        "CAPTURE_CONFIG": "",
        "CAPTURE_HOME": str(tmp_path / "h"),
    }.items():
        monkeypatch.setenv(name, value)
    assert load_settings().home_dir == (tmp_path / "h").resolve()


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "does not exist"),
        ("folder", "is not a file"),
        ("[ocr\n", "not valid TOML"),
        (b"a = '\xff'", "UTF-8"),
    ],
)
def test_a_config_file_that_cannot_be_used_is_an_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, content: str | bytes | None, expected: str
) -> None:
    path = tmp_path / "office.toml"
    if content == "folder":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    monkeypatch.setenv("CAPTURE_CONFIG", str(path))
    message = _config_error()
    assert str(path) in message and expected in message


@pytest.mark.parametrize("value", ["0", "abc", "65"])
def test_a_bad_environment_value_names_the_key_and_variable(
    monkeypatch: pytest.MonkeyPatch, value: str
) -> None:
    monkeypatch.setenv("CAPTURE_OCR__WORKERS", value)
    message = _config_error()
    assert message.startswith("ocr.workers: ") and "\n" not in message
    assert f"value '{value}'" in message and "from environment variable CAPTURE_OCR__WORKERS" in message


def test_bad_values_in_files_name_the_file_one_line_each(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _overlay(tmp_path, "[ocr]\nengine = 'easyocr'\n[web]\nport = 0\n", monkeypatch)
    lines = _config_error().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("ocr.engine: ") and str(path) in lines[0] and "'easyocr'" in lines[0]
    assert lines[1].startswith("web.port: ") and str(path) in lines[1]


def test_a_list_setting_from_the_environment_must_be_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CAPTURE_INDEX__ELASTICSEARCH__HOSTS", "http://es1:9200")
    assert "JSON" in _config_error()


def test_secret_values_are_not_repeated(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _overlay(tmp_path, "[index.elasticsearch]\npassword = 12345678\n", monkeypatch)
    message = _config_error()
    assert "index.elasticsearch.password" in message and "12345678" not in message
    monkeypatch.delenv("CAPTURE_CONFIG")
    monkeypatch.setenv("CAPTURE_INDEX__ELASTICSEARCH__PASSWORD", "s3cret")
    password = load_settings().index.elasticsearch.password
    assert isinstance(password, SecretStr) and password.get_secret_value() == "s3cret"


def test_overlay_files_merge_key_by_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    default = tmp_path / "default.toml"
    default.write_text(
        "[ocr]\nengine = 'tesseract'\nworkers = 4\n[index.elasticsearch]\nalias = 'a'\nbulk_chunk = 7\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(settings_module, "DEFAULT_CONFIG", default)
    _overlay(tmp_path, "[ocr]\nworkers = 1\n[index.elasticsearch]\nalias = 'b'\n", monkeypatch)
    settings = load_settings()
    assert (settings.ocr.engine, settings.ocr.workers) == ("tesseract", 1)
    assert (settings.index.elasticsearch.alias, settings.index.elasticsearch.bulk_chunk) == ("b", 7)
    monkeypatch.setenv("CAPTURE_OCR__WORKERS", "3")  # the environment still wins over both files
    monkeypatch.setenv("CAPTURE_INDEX__ELASTICSEARCH__ALIAS", "c")
    settings = load_settings()
    assert (settings.ocr.engine, settings.ocr.workers, settings.index.elasticsearch.alias) == (
        "tesseract",
        3,
        "c",
    )
    assert merged([("a", {"x": {"y": 1, "z": [1]}}), ("b", {"x": {"z": [2]}})]) == {"x": {"y": 1, "z": [2]}}


def test_keyword_construction_works_as_before_and_forbids_unknown_keys(tmp_path: Path) -> None:
    settings = Settings(home=str(tmp_path), index=IndexSettings(backend="elasticsearch"))
    assert settings.home_dir == tmp_path.resolve() and settings.index.backend == "elasticsearch"
    assert Settings(**settings.model_dump()).index.backend == "elasticsearch"
    with pytest.raises(ValidationError):
        Settings(homme=str(tmp_path))  # type: ignore[call-arg]
    with pytest.raises(ValidationError):
        OcrSettings(workrs=2)  # type: ignore[call-arg]


def _leaves(model: type[BaseModel], prefix: str = "") -> dict[str, object]:
    found: dict[str, object] = {}
    for name, field in model.model_fields.items():
        annotation = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            assert annotation.model_config.get("extra") == "forbid", f"{prefix}{name} allows unknown keys"
            found.update(_leaves(annotation, f"{prefix}{name}."))
        else:
            found[prefix + name] = field.default
    return found


def test_default_toml_and_the_models_agree_and_the_readme_names_every_setting() -> None:
    defaults = _leaves(Settings)
    data = tomllib.loads(DEFAULT_CONFIG.read_text(encoding="utf-8"))
    flat: dict[str, object] = {}

    def flatten(node: dict[str, object], prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict):
                flatten(value, f"{prefix}{key}.")
            else:
                flat[prefix + key] = value

    flatten(data, "")
    assert {key: defaults[key] for key in flat} == flat
    readme = (ROOT / "config" / "README.md").read_text(encoding="utf-8")
    assert [key for key in defaults if f"`{key}`" not in readme] == []
