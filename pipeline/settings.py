"""Settings: config/default.toml, then CAPTURE_CONFIG, then CAPTURE_* environment variables."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "config" / "default.toml"


class ImagingSettings(BaseModel):
    default_dpi: int = Field(300, ge=50, le=2400)
    max_skew_deg: float = Field(10.0, gt=0, le=45)
    detect_orientation: bool = True
    crop_borders: bool = True
    blank_ink_ratio: float = Field(0.0001, ge=0, le=1)
    keep_work_images: bool = False


class OcrSettings(BaseModel):
    engine: Literal["rapidocr", "tesseract"] = "rapidocr"
    # Inference runtime for RapidOCR's PP-OCR models (the same ONNX files ship in both wheels).
    rapidocr_runtime: Literal["openvino", "onnxruntime"] = "openvino"
    tesseract_languages: str = "chi_sim+chi_tra+eng"
    tesseract_psm: int = Field(3, ge=0, le=13)
    tesseract_timeout: float = Field(180, gt=0)
    workers: int = Field(2, ge=1, le=64)
    engine_threads: int = Field(1, ge=1, le=64)
    min_line_confidence: float = Field(0.5, ge=0, le=1)


class VerifySettings(BaseModel):
    min_dpi: int = Field(200, ge=1)
    min_page_confidence: float = Field(0.80, ge=0, le=1)


class PackageSettings(BaseModel):
    jpeg_quality: int = Field(90, ge=10, le=100)


class ElasticsearchSettings(BaseModel):
    """A real cluster: several hosts, HTTPS with a CA file, an API key or a user and password."""

    hosts: list[str] = ["http://127.0.0.1:9200"]
    alias: str = "capture-pages"  # searchers and writers use the alias; indices are <alias>-v<N>-<time>
    ca_file: str = ""
    verify_certs: bool = True
    api_key: SecretStr | None = None  # CAPTURE_INDEX__ELASTICSEARCH__API_KEY
    username: str = ""
    password: SecretStr | None = None  # CAPTURE_INDEX__ELASTICSEARCH__PASSWORD
    request_timeout: float = Field(30.0, gt=0)
    max_retries: int = Field(5, ge=0, le=50)  # per request, on 429/502/503/504, timeouts, refused
    backoff_seconds: float = Field(0.5, ge=0)  # first pause between bulk retries (doubles each time)
    bulk_chunk: int = Field(500, ge=1, le=10000)
    # Send plain `application/json` instead of the versioned media type (for proxies and
    # stand-ins that refuse `application/vnd.elasticsearch+json`; real clusters take both).
    plain_json: bool = False


class IndexSettings(BaseModel):
    backend: Literal["sqlite", "elasticsearch"] = "sqlite"
    snippet_chars: int = Field(30, ge=5, le=500)
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()


class WatchSettings(BaseModel):
    folder: str = ""  # empty: <home>/watch
    poll_seconds: float = Field(5.0, gt=0)
    quiet_seconds: float = Field(30.0, ge=0)
    marker: str = "READY"
    stale_claim_seconds: float = Field(120.0, gt=0)


class WebSettings(BaseModel):
    host: str = "127.0.0.1"  # this machine only, unless an office opens it deliberately
    port: int = Field(8080, ge=1, le=65535)
    session_minutes: int = Field(30, ge=1, le=24 * 60)  # web sessions end after this long idle
    max_failed_logins: int = Field(5, ge=0, le=1000)  # then the account is locked; 0: never
    lockout_minutes: int = Field(15, ge=1, le=7 * 24 * 60)


class StateSettings(BaseModel):
    url: str = ""  # empty: SQLite file in <home>; e.g. postgresql+psycopg://user@host/db


class Settings(BaseSettings):
    """All settings; each stage receives only its own section."""

    model_config = SettingsConfigDict(
        env_prefix="CAPTURE_",
        env_nested_delimiter="__",
        extra="ignore",
    )

    home: str = ""
    imaging: ImagingSettings = ImagingSettings()
    ocr: OcrSettings = OcrSettings()
    verify: VerifySettings = VerifySettings()
    package: PackageSettings = PackageSettings()
    index: IndexSettings = IndexSettings()
    watch: WatchSettings = WatchSettings()
    state: StateSettings = StateSettings()
    web: WebSettings = WebSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        files = [DEFAULT_CONFIG]
        extra = os.environ.get("CAPTURE_CONFIG")
        if extra:
            files.append(Path(extra))
        toml = TomlConfigSettingsSource(settings_cls, toml_file=files)
        return (init_settings, env_settings, toml)

    @property
    def home_dir(self) -> Path:
        """The folder that holds everything the pipeline writes."""
        home = Path(self.home).expanduser() if self.home.strip() else REPO_ROOT / "capture-home"
        return home.resolve()

    @property
    def archive_dir(self) -> Path:
        return self.home_dir / "archive"

    @property
    def work_dir(self) -> Path:
        return self.home_dir / "work"

    @property
    def reports_dir(self) -> Path:
        return self.home_dir / "reports"

    @property
    def index_path(self) -> Path:
        return self.home_dir / "index.sqlite"

    @property
    def state_path(self) -> Path:
        return self.home_dir / "state.sqlite"

    @property
    def state_url(self) -> str:
        return self.state.url or str(self.state_path)

    @property
    def watch_dir(self) -> Path:
        return (
            Path(self.watch.folder).expanduser().resolve() if self.watch.folder else self.home_dir / "watch"
        )

    @property
    def prefect_home(self) -> Path:
        return self.home_dir / "prefect"

    def ensure_dirs(self) -> None:
        for d in (self.home_dir, self.archive_dir, self.work_dir, self.reports_dir):
            d.mkdir(parents=True, exist_ok=True)


def load_settings() -> Settings:
    return Settings()
