"""What an engine is made of: its model files (with SHA-256), their packages and versions, offline."""

from __future__ import annotations

import copy
import hashlib
import importlib.util
import shutil
from dataclasses import dataclass
from functools import lru_cache
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from pipeline.errors import OcrError
from pipeline.settings import OcrSettings


@dataclass(frozen=True)
class ModelSet:
    generation: str  # RapidOCR's ocr_version
    size: str  # RapidOCR's model_type
    det: tuple[str, str]  # (import name of the package shipping it, path inside the package)
    rec: tuple[str, str]
    cls: tuple[str, str] = ("rapidocr", "models/ch_ppocr_mobile_v2.0_cls_mobile.onnx")
    licence: str = "Apache-2.0 (PaddleOCR weights; RapidOCR code)"


# Every RapidOCR model set we support, by its `ocr.engine` name. The weights ship inside the
# wheels named here; nothing is downloaded. The v4 files are those rapidocr-openvino and
# rapidocr-onnxruntime 1.4 ran (the default before PP-OCRv6), kept selectable for comparison.
MODEL_SETS: dict[str, ModelSet] = {
    "rapidocr": ModelSet(
        "PP-OCRv6",
        "small",
        det=("rapidocr", "models/PP-OCRv6_det_small.onnx"),
        rec=("rapidocr", "models/PP-OCRv6_rec_small.onnx"),
    ),
    "rapidocr-ppocrv4": ModelSet(
        "PP-OCRv4",
        "mobile",
        det=("rapidocr_onnxruntime", "models/ch_PP-OCRv4_det_infer.onnx"),
        rec=("rapidocr_onnxruntime", "models/ch_PP-OCRv4_rec_infer.onnx"),
    ),
}
_DISTRIBUTIONS = {"rapidocr": "rapidocr", "rapidocr_onnxruntime": "rapidocr-onnxruntime"}
_TESSDATA = (Path("/usr/share/tesseract-ocr/5/tessdata"), Path("/usr/share/tesseract-ocr/4.00/tessdata"))


@dataclass(frozen=True)
class ModelFile:
    role: str  # det, rec, cls, or a Tesseract language
    path: Path
    package: str  # the distribution that ships it, with its version
    sha256: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "file": self.path.name, "package": self.package, "sha256": self.sha256}


def _version(distribution: str) -> str:
    try:
        return version(distribution)
    except PackageNotFoundError:
        return "not installed"


@lru_cache(maxsize=64)
def _sha256(path: Path, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _model_file(role: str, package: str, inside: str) -> ModelFile:
    spec = importlib.util.find_spec(package)  # finds the package without importing it
    if spec is None or not spec.submodule_search_locations:
        raise OcrError(f"the package {package} holding the {role} model is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / inside
    if not path.is_file():
        raise OcrError(f"the {role} model {inside} is missing from the installed {package}")
    stat = path.stat()
    distribution = _DISTRIBUTIONS.get(package, package)
    return ModelFile(
        role, path, f"{distribution} {_version(distribution)}", _sha256(path, stat.st_size, stat.st_mtime_ns)
    )


def model_files(models: str) -> tuple[ModelFile, ...]:
    """The detection, recognition and line-classifier files of a RapidOCR model set."""
    chosen = MODEL_SETS[models]
    return tuple(_model_file(role, *getattr(chosen, role)) for role in ("det", "rec", "cls"))


def _tesseract_files(languages: str) -> tuple[ModelFile, ...]:
    files = []
    folder = next((f for f in _TESSDATA if f.is_dir()), None)
    for language in [*languages.split("+"), "osd"]:
        path = folder / f"{language}.traineddata" if folder else None
        if path is None or not path.is_file():
            continue
        stat = path.stat()
        files.append(
            ModelFile(language, path, "tesseract-ocr", _sha256(path, stat.st_size, stat.st_mtime_ns))
        )
    return tuple(files)


@lru_cache(maxsize=16)
def _identity(engine: str, runtime: str, languages: str) -> dict[str, Any]:
    if engine == "tesseract":
        import pytesseract

        have = shutil.which(pytesseract.pytesseract.tesseract_cmd) is not None
        return {
            "engine": engine,
            "version": str(pytesseract.get_tesseract_version()) if have else "not installed",
            "models": [f.to_dict() for f in _tesseract_files(languages)],
        }
    chosen = MODEL_SETS[engine]
    return {
        "engine": engine,
        "models_generation": f"{chosen.generation} {chosen.size}",
        "runtime": f"{runtime} {_version(runtime)}",
        "version": f"rapidocr {_version('rapidocr')}",
        "models": [f.to_dict() for f in model_files(engine)],
        "licence": chosen.licence,
    }


def engine_identity(settings: OcrSettings) -> dict[str, Any]:
    """The engine, its runtime, and every model file it reads (file, package, SHA-256).

    Cheap after the first call (file hashes are kept per path, size and modification time), so
    it can go into every page's cache key.
    """
    languages = settings.tesseract_languages if settings.engine == "tesseract" else ""
    return copy.deepcopy(_identity(settings.engine, settings.rapidocr_runtime, languages))
