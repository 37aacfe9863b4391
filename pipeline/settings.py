"""Settings: config/default.toml, then the CAPTURE_CONFIG file, then CAPTURE_* environment variables.

Loading is strict: a key no model knows (in either file, at any depth, or in an environment
variable CAPTURE_<SECTION>__<NAME>), a CAPTURE_CONFIG file that is missing or not TOML, and a
value a field refuses are errors that name the key and where it came from (`load_settings`
raises ConfigError, exit 2). A misspelled setting is never ignored. Files merge key by key: an
overlay that sets only [ocr] workers keeps every other [ocr] key. Environment variables without
"__" that are not settings (CAPTURE_USER, CAPTURE_ES_URL, CAPTURE_CONFIG...) are not read here.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    SettingsError,
)

from pipeline.errors import ConfigError

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "config" / "default.toml"
ENV_PREFIX = "CAPTURE_"
ENV_DELIMITER = "__"
CONFIG_ENV = "CAPTURE_CONFIG"
# Values of these keys are never repeated in an error message (they may hold a password).
_UNSHOWN = {"password", "api_key", "url", "username"}


class Section(BaseModel):
    """A settings section: a key it does not know is an error, never ignored."""

    model_config = ConfigDict(extra="forbid")


class ImagingSettings(Section):
    default_dpi: int = Field(300, ge=50, le=2400)
    max_skew_deg: float = Field(10.0, gt=0, le=45)
    detect_orientation: bool = True
    crop_borders: bool = True
    blank_ink_ratio: float = Field(0.0001, ge=0, le=1)
    keep_work_images: bool = False
    # Pages whose image header promises more pixels are refused with a finding, before decoding.
    max_page_pixels: int = Field(36_000_000, ge=1_000_000, le=2_000_000_000)
    # Source files larger than this are refused with a finding (not copied, not decoded).
    max_file_mb: int = Field(1024, ge=1, le=1_000_000)


class OcrSettings(Section):
    # "rapidocr": PP-OCRv6 small (default); "rapidocr-ppocrv4": the PP-OCRv4 models used before;
    # "tesseract". Every RapidOCR model ships inside a wheel (pipeline.ocr.identity).
    engine: Literal["rapidocr", "rapidocr-ppocrv4", "tesseract"] = "rapidocr"
    # Inference runtime for the PP-OCR models (the same ONNX files on both).
    rapidocr_runtime: Literal["openvino", "onnxruntime"] = "openvino"
    tesseract_languages: str = "chi_sim+chi_tra+eng"
    tesseract_psm: int = Field(3, ge=0, le=13)
    tesseract_timeout: float = Field(180, gt=0)
    workers: int = Field(2, ge=1, le=64)
    engine_threads: int = Field(1, ge=1, le=64)
    # Text lines the PP-OCR recogniser reads in one inference call (RapidOCR's rec_batch_num,
    # 6 there). Lines of a batch are padded to the widest, and the recogniser's buffers grow with
    # batch x width: 1 reads as well, faster and in less memory (benchmarks/README.md).
    line_batch: int = Field(1, ge=1, le=64)
    # Chosen by measurement (benchmarks/README.md): 0.5 dropped real text on poor scans.
    min_line_confidence: float = Field(0.2, ge=0, le=1)


class VerifySettings(Section):
    min_dpi: int = Field(200, ge=1)
    min_page_confidence: float = Field(0.80, ge=0, le=1)


class PackageSettings(Section):
    jpeg_quality: int = Field(90, ge=10, le=100)


class ElasticsearchSettings(Section):
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


class IndexSettings(Section):
    backend: Literal["sqlite", "elasticsearch"] = "sqlite"
    snippet_chars: int = Field(30, ge=5, le=500)
    elasticsearch: ElasticsearchSettings = ElasticsearchSettings()


class WatchSettings(Section):
    folder: str = ""  # empty: <home>/watch
    poll_seconds: float = Field(5.0, gt=0)
    quiet_seconds: float = Field(30.0, ge=0)
    marker: str = "READY"
    stale_claim_seconds: float = Field(120.0, gt=0)
    # Processes started on one batch (a process that died counts) before it is quarantined.
    max_attempts: int = Field(3, ge=1, le=20)


class WebSettings(Section):
    host: str = "127.0.0.1"  # this machine only, unless an office opens it deliberately
    port: int = Field(8080, ge=1, le=65535)
    session_minutes: int = Field(30, ge=1, le=24 * 60)  # web sessions end after this long idle
    max_failed_logins: int = Field(5, ge=0, le=1000)  # then the account is locked; 0: never
    lockout_minutes: int = Field(15, ge=1, le=7 * 24 * 60)


class RetentionClass(Section):
    """One retention class (保管期限): the date it counts from and how many years it runs."""

    name: str = Field(min_length=1, max_length=50)
    counts_from: Literal["contract_end", "created", "never"]  # never: kept permanently
    years: int = Field(0, ge=0, le=200)
    aliases: list[str] = []  # other spellings of the class in catalogues


DEFAULT_RETENTION_CLASSES: list[dict[str, Any]] = [
    {"name": "合同终止后10年", "counts_from": "contract_end", "years": 10, "aliases": ["D10"]},
    {"name": "合同终止后6年", "counts_from": "contract_end", "years": 6, "aliases": ["D6"]},
    {"name": "形成之日起6年", "counts_from": "created", "years": 6, "aliases": ["文件形成后6年"]},
    {"name": "永久", "counts_from": "never", "years": 0, "aliases": ["permanent"]},
]


class RetentionSettings(Section):
    # validate_default: the default (plain tables, as default.toml writes them) becomes models
    classes: list[RetentionClass] = Field(
        default=DEFAULT_RETENTION_CLASSES,  # type: ignore[arg-type]
        validate_default=True,
        min_length=1,
    )

    @model_validator(mode="after")
    def _names_once(self) -> RetentionSettings:
        seen: set[str] = set()
        for cls in self.classes:
            for name in (cls.name, *cls.aliases):
                key = name.strip().lower()
                if key in seen:
                    raise ValueError(f"retention class name {name!r} is used twice")
                seen.add(key)
        return self


class FixitySettings(Section):
    # The watcher starts a rolling check this often (minutes) ...
    rolling_every_minutes: float = Field(60.0, gt=0, le=7 * 24 * 60)
    # ... that checks the least recently checked packages for at most this long (seconds) ...
    rolling_budget_seconds: float = Field(120.0, gt=0, le=24 * 3600)
    # ... aiming to check every package (and every registered copy) once in this many days.
    cycle_days: int = Field(90, ge=1, le=3650)


class GrantSettings(Section):
    default_days: int = Field(7, ge=1, le=3650)  # an approved access request lasts this long
    max_days: int = Field(90, ge=1, le=3650)  # and never longer than this


class StateSettings(Section):
    url: str = ""  # empty: SQLite file in <home>; e.g. postgresql+psycopg://user@host/db


class ServerSettings(Section):
    """Where batches run: in this process (embedded) or on a Prefect server's workers."""

    mode: Literal["embedded", "server"] = "embedded"
    prefect_api_url: str = ""  # server mode: e.g. http://central:4200/api (else PREFECT_API_URL)
    work_pool: str = "capture"  # OCR workers: `prefect worker start --pool capture`
    control_pool: str = "capture-control"  # the batch runs that plan, fan out and report
    deployment: str = "capture"  # deployment name of both flows
    chunk_items: int = Field(10, ge=1, le=10_000)  # items per run a worker takes
    chunk_attempts: int = Field(3, ge=1, le=20)  # runs of one chunk (a crashed one counts)
    heartbeat_seconds: int = Field(30, ge=30, le=3600)  # flow run heartbeats (Prefect's minimum: 30)
    crashed_after_seconds: int = Field(90, ge=45, le=86_400)  # no heartbeat this long: Crashed
    poll_seconds: float = Field(2.0, gt=0, le=60)  # how often a batch run looks at its chunks


class Settings(BaseSettings):
    """All settings; each stage receives only its own section."""

    model_config = SettingsConfigDict(
        env_prefix="CAPTURE_",
        env_nested_delimiter=ENV_DELIMITER,
        extra="forbid",
    )

    home: str = ""
    imaging: ImagingSettings = ImagingSettings()
    ocr: OcrSettings = OcrSettings()
    verify: VerifySettings = VerifySettings()
    package: PackageSettings = PackageSettings()
    index: IndexSettings = IndexSettings()
    watch: WatchSettings = WatchSettings()
    state: StateSettings = StateSettings()
    server: ServerSettings = ServerSettings()
    web: WebSettings = WebSettings()
    retention: RetentionSettings = RetentionSettings()
    fixity: FixitySettings = FixitySettings()
    grants: GrantSettings = GrantSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        check_environment(os.environ)
        files = _FileSettings(settings_cls, merged(config_layers()))
        return (init_settings, env_settings, files)

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
        """Create the home folder, readable by its owner only, and its main folders."""
        from pipeline.errors import ConfigError

        try:
            self.home_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            self.protect_home()
            for d in (self.archive_dir, self.work_dir, self.reports_dir):
                d.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"the home folder {self.home_dir} (CAPTURE_HOME) cannot be used: {exc.strerror or exc}"
            ) from exc

    def protect_home(self) -> None:
        """The home folder readable by its owner only (if it exists and is ours)."""
        try:
            if self.home_dir.is_dir() and self.home_dir.stat().st_uid == os.getuid():
                self.home_dir.chmod(0o700)
        except OSError:
            pass


def load_settings() -> Settings:
    """The settings, checked; ConfigError (exit 2) names every wrong key and where it came from."""
    try:
        return Settings()
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from exc
    except SettingsError as exc:  # e.g. an environment variable that should hold JSON (a list)
        cause = f": {exc.__cause__}" if exc.__cause__ else ""
        raise ConfigError(
            f"settings: {exc}{cause} (an environment variable for a list or a whole section holds JSON, "
            "e.g. CAPTURE_INDEX__ELASTICSEARCH__HOSTS='[\"https://es1:9200\"]')"
        ) from exc


# ------------------------------------------------------------------ files


class _FileSettings(PydanticBaseSettingsSource):
    """The TOML files, already read, checked and merged."""

    def __init__(self, settings_cls: type[BaseSettings], data: dict[str, Any]) -> None:
        super().__init__(settings_cls)
        self._data = data

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return self._data.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return self._data


def config_layers() -> list[tuple[str, dict[str, Any]]]:
    """(where, data) for default.toml and the CAPTURE_CONFIG file, lowest precedence first.

    Each file is checked against the models: an unknown key, at any depth, is a ConfigError
    naming the file and the dotted key. A CAPTURE_CONFIG that names nothing readable is one too.
    """
    files: list[Path] = []
    if DEFAULT_CONFIG.is_file():  # the models hold the same defaults (a test keeps them in step)
        files.append(DEFAULT_CONFIG)
    named = os.environ.get(CONFIG_ENV, "")
    if named.strip():
        path = Path(named).expanduser()
        if not path.exists():
            raise ConfigError(f"{CONFIG_ENV} names {named!r}, which does not exist")
        if not path.is_file():
            raise ConfigError(f"{CONFIG_ENV} names {named!r}, which is not a file")
        files.append(path)
    layers = []
    problems: list[str] = []
    for path in files:
        data = _read_toml(path)
        problems.extend(f"{path}: {problem}" for problem in unknown_keys(data, Settings))
        layers.append((str(path), data))
    if problems:
        raise ConfigError("\n".join(problems))
    return layers


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot be read ({exc.strerror or exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not valid TOML: not UTF-8 text ({exc.reason} at byte {exc.start})"
        ) from exc


def merged(layers: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The layers merged key by key (a later layer's table updates, not replaces, an earlier one)."""
    result: dict[str, Any] = {}
    for _, data in layers:
        result = _deep_merge(result, data)
    return result


def _deep_merge(base: dict[str, Any], overlay: Mapping[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in overlay.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), dict):
            result[key] = _deep_merge(result[key], value)
        else:
            result[key] = value
    return result


def _section_model(field: FieldInfo) -> type[BaseModel] | None:
    annotation = field.annotation
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return None


def _suggestion(key: str, known: list[str]) -> str | None:
    matches = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
    return matches[0] if matches else None


def unknown_keys(data: Mapping[str, Any], model: type[BaseModel], prefix: str = "") -> Iterator[str]:
    """A message for every key of `data` (a TOML document or table) that `model` does not have."""
    for key, value in data.items():
        dotted = f"{prefix}{key}"
        field = model.model_fields.get(key)
        if field is None:
            near = _suggestion(key, list(model.model_fields))
            yield f"unknown setting '{dotted}'" + (f" (did you mean '{prefix}{near}'?)" if near else "")
            continue
        section = _section_model(field)
        if section is not None and isinstance(value, Mapping):
            yield from unknown_keys(value, section, f"{dotted}.")
        elif section is not None:
            yield f"'{dotted}' is a section ([{dotted}] with keys in it), not a single value"
        elif isinstance(value, Mapping):
            yield f"'{dotted}' is a single setting, not a section"


# ------------------------------------------------------------------ environment


def check_environment(environ: Mapping[str, str]) -> None:
    """Every CAPTURE_..._..__.. variable must name a known section and key; ConfigError otherwise.

    Variables without "__" are left alone: CAPTURE_HOME is the `home` setting, the others
    (CAPTURE_CONFIG, CAPTURE_USER, CAPTURE_ES_URL, ...) are read by whoever needs them.
    """
    problems = [
        problem
        for name in sorted(environ)
        if name.upper().startswith(ENV_PREFIX) and ENV_DELIMITER in name
        for problem in [_environment_problem(name)]
        if problem
    ]
    if problems:
        raise ConfigError("\n".join(problems))


def _environment_problem(name: str) -> str | None:
    parts = name[len(ENV_PREFIX) :].lower().split(ENV_DELIMITER)
    model: type[BaseModel] = Settings
    for depth, part in enumerate(parts):
        dotted = ".".join(parts[: depth + 1])
        field = model.model_fields.get(part)
        if field is None:
            near = _suggestion(part, list(model.model_fields))
            message = f"environment variable {name}: unknown setting '{dotted}'"
            if near:
                spelled = ENV_DELIMITER.join([*parts[:depth], near, *parts[depth + 1 :]]).upper()
                message += f" (did you mean {ENV_PREFIX}{spelled}?)"
            return message
        if depth == len(parts) - 1:
            return None
        section = _section_model(field)
        if section is None:
            return f"environment variable {name}: '{dotted}' is a single setting, not a section"
        model = section
    return None


# ------------------------------------------------------------------ messages


def describe_validation_error(exc: ValidationError) -> str:
    """One line per problem: the dotted key, what is wrong, the value and where it came from."""
    try:
        layers = config_layers()
    except ConfigError:
        layers = []
    lines = []
    for error in exc.errors():
        parts = [str(part) for part in error["loc"]]
        dotted = ".".join(parts) or "settings"
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown setting"
        details = []
        if error["type"] != "extra_forbidden" and not _UNSHOWN & set(parts):
            details.append(f"value {_shown(error.get('input'))}")
        origin = _origin(parts, layers, os.environ)
        if origin:
            details.append(f"from {origin}")
        lines.append(f"{dotted}: {message}" + (f" ({', '.join(details)})" if details else ""))
    return "\n".join(lines)


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _origin(parts: list[str], layers: list[tuple[str, dict[str, Any]]], environ: Mapping[str, str]) -> str:
    """Where the value at `parts` came from: the environment variable, else the last file holding it."""
    by_upper = {name.upper(): name for name in environ}
    for depth in range(len(parts), 0, -1):
        wanted = ENV_PREFIX + ENV_DELIMITER.join(parts[:depth]).upper()
        if wanted in by_upper:
            return f"environment variable {by_upper[wanted]}"
    for where, data in reversed(layers):
        node: Any = data
        for part in parts:
            if not isinstance(node, Mapping) or part not in node:
                break
            node = node[part]
        else:
            return where
    return ""
