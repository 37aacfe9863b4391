"""Shared fixtures: real Tesseract, RapidOCR, pikepdf, SQLite and Prefect; no mocks."""

from __future__ import annotations

import importlib.util
import os
import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
DEV_SCANS = ROOT.parent / "shared" / "data" / "dev-scans"

os.environ.setdefault("DO_NOT_TRACK", "1")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "180")


def _load_samples_module():  # type: ignore[no-untyped-def]
    spec = importlib.util.spec_from_file_location("make_samples", SAMPLES / "make_samples.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["make_samples"] = module
    spec.loader.exec_module(module)
    return module


make_samples = _load_samples_module()


@pytest.fixture(scope="session")
def samples_module():  # type: ignore[no-untyped-def]
    return make_samples


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """No test writes to the checkout's capture-home."""
    if "CAPTURE_HOME" not in os.environ:
        monkeypatch.setenv("CAPTURE_HOME", str(tmp_path_factory.mktemp("home")))


@pytest.fixture(scope="session")
def prefect_harness():  # type: ignore[no-untyped-def]
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def rapid_engine():  # type: ignore[no-untyped-def]
    from pipeline.ocr.rapid import RapidOcrEngine

    return RapidOcrEngine(threads=2)


def make_settings(home: Path, **overrides):  # type: ignore[no-untyped-def]
    from pipeline.settings import Settings

    settings = Settings(home=str(home), **overrides)
    settings.ensure_dirs()
    return settings


def import_catalogue(settings, path: Path) -> None:  # type: ignore[no-untyped-def]
    from pipeline.catalog import read_catalogue
    from pipeline.store import Store

    store = Store(settings.state_url)
    try:
        store.import_catalogue(read_catalogue(path).entries, str(path))
    finally:
        store.close()


@pytest.fixture(scope="session")
def sample_run(tmp_path_factory: pytest.TempPathFactory, prefect_harness):  # type: ignore[no-untyped-def]
    """The bundled sample batch processed once through the real flow."""
    from pipeline.flows.batch import run_batch

    home = tmp_path_factory.mktemp("sample-home")
    batch = tmp_path_factory.mktemp("sample-batch") / "batch"
    shutil.copytree(SAMPLES / "batch", batch)
    settings = make_settings(home)
    import_catalogue(settings, SAMPLES / "catalogue.csv")
    report = run_batch(batch, settings)
    return settings, report, batch


def items_by_code(report):  # type: ignore[no-untyped-def]
    return {item["archive_code"]: item for item in report["items"]}


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def postgres_server():  # type: ignore[no-untyped-def]
    """A throwaway PostgreSQL cluster on 127.0.0.1 (or CAPTURE_TEST_DATABASE_URL's server)."""
    url = os.environ.get("CAPTURE_TEST_DATABASE_URL")
    if url:
        yield url.rsplit("/", 1)[0]
        return
    from pipeline.devcluster import ThrowawayPostgres

    if not list(Path("/usr/lib/postgresql").glob("*/bin/initdb")):
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = ThrowawayPostgres.start()
    try:
        yield f"postgresql+psycopg://postgres@127.0.0.1:{server.port}"
    finally:
        server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path: Path) -> str:  # type: ignore[no-untyped-def]
    """A fresh, empty database of each kind."""
    import uuid

    if request.param == "sqlite":
        return str(tmp_path / "state.sqlite")
    server = request.getfixturevalue("postgres_server")
    import psycopg

    name = f"capture_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(
        server.replace("postgresql+psycopg", "postgresql") + "/postgres", autocommit=True
    ) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return f"{server}/{name}"


# ------------------------------------------------------------------ search backends

ES_URL = os.environ.get("CAPTURE_ES_URL", "")
BACKENDS = ["sqlite", "osmem"] + (["live"] if ES_URL else [])


def es_settings(home: Path, url: str, *, stand_in: bool, **overrides):  # type: ignore[no-untyped-def]
    """Settings for an Elasticsearch backend; a unique alias keeps tests apart on a live cluster."""
    import uuid

    from pipeline.settings import ElasticsearchSettings, IndexSettings

    es = ElasticsearchSettings(
        hosts=[url],
        alias=f"capture-test-{uuid.uuid4().hex[:10]}",
        plain_json=stand_in,  # osmem-server refuses the versioned media type (ENVIRONMENT.md)
        **overrides,
    )
    return make_settings(home, index=IndexSettings(backend="elasticsearch", elasticsearch=es))


def drop_es_indices(settings) -> None:  # type: ignore[no-untyped-def]
    from pipeline.index.elastic import make_client

    client = make_client(settings)
    try:
        client.indices.delete(index=f"{settings.index.elasticsearch.alias}-*", ignore_unavailable=True)
    finally:
        client.close()


@pytest.fixture(params=BACKENDS)
def backend_settings(request, tmp_path: Path):  # type: ignore[no-untyped-def]
    """Settings for each search backend in turn: SQLite, osmem-server, and a live cluster if set."""
    if request.param == "sqlite":
        yield make_settings(tmp_path / "home")
        return
    if request.param == "osmem":
        clone = request.getfixturevalue("osmem_clone")
        yield es_settings(tmp_path / "home", clone.url, stand_in=True)
        return
    settings = es_settings(tmp_path / "home", ES_URL, stand_in=False)
    yield settings
    drop_es_indices(settings)
