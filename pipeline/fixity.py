"""Fixity: every package file's SHA-256 recomputed against its manifest and the state store.

A package is intact when its folder holds exactly the files its manifest lists (plus the
manifest itself and decisions.jsonl, the append-only QA history, whose lines must be JSON),
every file hashes to what the manifest says, the manifest lists the PDF with the SHA-256 the
state store recorded when the item was packaged, and the manifest itself is the one recorded
at the package's first clean check. Anything else is a problem naming the item and the path:
`damaged` (bytes differ), `missing`, or `unexpected` (a file or package nobody recorded).
Every check is recorded in the state store (run, per-package result, latest status), so an
auditor can show when each package was last checked and what was found; the watcher's
rolling check (`run_rolling_if_due`) takes the least recently checked packages of the archive
and of every registered copy, within a time budget, so that all are checked once a cycle.
"""

from __future__ import annotations

import json
import logging
import math
import random
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

from pipeline.archive import DECISIONS_NAME, MANIFEST_NAME, ArchiveLayout, pdf_name, read_manifest, sha256_of
from pipeline.errors import NotFound
from pipeline.settings import FixitySettings, Settings
from pipeline.store import PackageResult, Store, aware
from pipeline.store.schema import FixityRunRow, FixityStatusRow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    archive_code: str
    path: str  # relative to the archive root
    kind: str  # damaged / missing / unexpected
    detail: str

    def to_dict(self) -> dict[str, str]:
        return asdict(self)


@dataclass
class PackageCheck:
    archive_code: str
    files: int = 0
    bytes: int = 0
    manifest_sha256: str = ""
    problems: list[Problem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class FixityReport:
    root: str
    scope: str
    checks: list[PackageCheck] = field(default_factory=list)
    stray: list[Problem] = field(default_factory=list)  # at the root: folders and files nobody recorded
    seconds: float = 0.0
    run_id: int = 0
    quota: int = 0  # rolling: the packages this run should have checked
    behind: bool = False  # rolling: the time budget ran out before the quota

    @property
    def problems(self) -> list[Problem]:
        return [p for c in self.checks for p in c.problems] + self.stray

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def files(self) -> int:
        return sum(c.files for c in self.checks)

    @property
    def bytes(self) -> int:
        return sum(c.bytes for c in self.checks)


@dataclass(frozen=True)
class FixityOverview:
    runs: list[FixityRunRow]
    damaged: list[FixityStatusRow]
    packages: int
    checked_in_cycle: int  # packages of the archive checked within the last cycle_days
    cycle_days: int


def check_package(root: Path, code: str, pdf_sha256: str | None, baseline: str | None) -> PackageCheck:
    """Check one package folder under `root` against its manifest, the store's PDF hash and the
    manifest's recorded baseline."""
    check = PackageCheck(code)
    folder = root / code

    def problem(path: str, kind: str, detail: str) -> None:
        check.problems.append(Problem(code, f"{code}/{path}" if path else f"{code}/", kind, detail))

    if not folder.is_dir():
        problem("", "missing", "the package folder is missing")
        return check
    entries: dict[str, str] = {}
    manifest = folder / MANIFEST_NAME
    if not manifest.is_file():
        problem(MANIFEST_NAME, "missing", "the manifest is missing")
    else:
        check.manifest_sha256, size = sha256_of(manifest)
        check.files, check.bytes = 1, size
        try:
            entries = read_manifest(manifest)
        except (ValueError, UnicodeDecodeError) as exc:
            problem(MANIFEST_NAME, "damaged", f"the manifest cannot be read: {exc}")
        if baseline and check.manifest_sha256 != baseline:
            problem(MANIFEST_NAME, "damaged", "the manifest differs from the one recorded at its first check")
    pdf = pdf_name(code)
    if entries and pdf not in entries:
        problem(MANIFEST_NAME, "damaged", f"the manifest does not list {pdf}")
    elif pdf_sha256 and entries.get(pdf, pdf_sha256) != pdf_sha256:
        problem(pdf, "damaged", "the manifest's SHA-256 of the PDF differs from the state store's")
    for name, expected in sorted(entries.items()):
        path = folder / name
        if not path.is_file() or path.is_symlink():
            problem(name, "missing", "listed in the manifest, not in the package")
            continue
        actual, size = sha256_of(path)
        check.files, check.bytes = check.files + 1, check.bytes + size
        if actual != expected:
            problem(name, "damaged", f"SHA-256 {actual[:16]}..., the manifest says {expected[:16]}...")
        elif name == pdf and pdf_sha256 and actual != pdf_sha256:
            problem(name, "damaged", "SHA-256 differs from the state store's")
    known = set(entries) | {MANIFEST_NAME, DECISIONS_NAME}
    for path in sorted(folder.rglob("*")):
        name = path.relative_to(folder).as_posix()
        if name in known and path.is_file() and not path.is_symlink():
            continue
        if path.is_dir() and not path.is_symlink() and any(path.iterdir()):
            continue  # its files are reported one by one
        problem(name, "unexpected", "not listed in the manifest")
    decisions = folder / DECISIONS_NAME
    if decisions.is_file() and not decisions.is_symlink():
        for number, line in enumerate(decisions.read_bytes().splitlines(), start=1):
            try:
                json.loads(line) if line.strip() else None
            except ValueError:
                problem(DECISIONS_NAME, "damaged", f"line {number} is not a JSON object")
                break
    return check


def primary_root(settings: Settings) -> Path:
    return settings.archive_dir.resolve()


def check_archive(
    settings: Settings,
    store: Store,
    *,
    user: str,
    codes: Iterable[str] = (),
    sample: int | None = None,
    copy: Path | None = None,
    scope: str = "",
    deadline: float | None = None,
) -> FixityReport:
    """Check the packages of the archive (or of the copy at `copy`) and record the run.

    With neither codes nor a sample, every current package is checked, and folders or files at
    the root that no current package explains are reported too."""
    root = copy.resolve() if copy is not None else primary_root(settings)
    packages = store.current_packages()
    wanted = list(dict.fromkeys(codes))
    unknown = [c for c in wanted if c not in packages]
    if unknown:
        raise NotFound(f"no package in the archive for {', '.join(unknown[:5])}")
    if not wanted:
        wanted = sorted(packages)
        if sample is not None:
            wanted = sorted(random.SystemRandom().sample(wanted, min(sample, len(wanted))))
    scope = scope or ("codes" if codes else "sample" if sample is not None else "all")
    report = FixityReport(str(root), scope)
    started, began = datetime.now(UTC), time.monotonic()
    baselines = store.baselines(wanted)
    results = []
    for code in wanted:
        if deadline is not None and report.checks and time.monotonic() >= deadline:
            break
        pdf = packages[code]
        check = check_package(root, code, pdf, baselines.get((code, pdf)))
        report.checks.append(check)
        first_clean = check.ok and (code, pdf) not in baselines and check.manifest_sha256
        results.append(
            PackageResult(
                code,
                check.ok,
                [p.to_dict() for p in check.problems],
                (pdf, check.manifest_sha256) if first_clean else None,
            )
        )
    if scope == "all":
        report.stray = stray_entries(root, set(packages))
    report.seconds = time.monotonic() - began
    run = {
        "root": report.root,
        "scope": scope,
        "started_at": started,
        "finished_at": datetime.now(UTC),
        "packages": len(report.checks),
        "files": report.files,
        "bytes": report.bytes,
        "problems": len(report.problems),
        "details": {"problems": [p.to_dict() for p in report.problems[:200]], "seconds": report.seconds},
    }
    report.run_id = store.record_fixity(run, results, user)
    return report


def stray_entries(root: Path, packages: set[str]) -> list[Problem]:
    """Folders and files at the archive root that are no current package (dot-folders excepted)."""
    found = []
    layout = ArchiveLayout(root)
    for path in sorted(root.iterdir()) if root.is_dir() else []:
        if path.name.startswith(".") or path.name in packages:
            continue
        destroyed = path.is_dir() and layout.disposed.joinpath(f"{path.name}.json").is_file()
        detail = (
            "a destroyed item's package is still here" if destroyed else "no current package of this name"
        )
        found.append(Problem(path.name, path.name + ("/" if path.is_dir() else ""), "unexpected", detail))
    return found


# ---------------------------------------------------------------- the rolling check


def rolling_quota(total: int, fixity: FixitySettings) -> int:
    """Packages per run so that `total` packages are all checked once in `cycle_days`."""
    runs_per_cycle = fixity.cycle_days * 24 * 60 / fixity.rolling_every_minutes
    return max(1, math.ceil(total / runs_per_cycle)) if total else 0


def rolling_due(settings: Settings, store: Store, at: datetime | None = None) -> bool:
    last = store.fixity_runs(limit=1, scope="rolling")
    if not last:
        return True
    every = timedelta(minutes=settings.fixity.rolling_every_minutes)
    return aware(last[0].started_at) + every <= (at or datetime.now(UTC))


def rolling_check(settings: Settings, store: Store, *, user: str = "watcher") -> list[FixityReport]:
    """Check the least recently checked packages of the archive and of each registered copy that
    is reachable, `rolling_quota` of them per root, for at most `fixity.rolling_budget_seconds`."""
    deadline = time.monotonic() + settings.fixity.rolling_budget_seconds
    quota = rolling_quota(len(store.current_packages()), settings.fixity)
    roots: list[Path | None] = [None]
    for replica in store.replicas():
        if Path(replica.root).is_dir():
            roots.append(Path(replica.root))
        else:
            log.warning("rolling fixity check: the copy %s is not reachable; skipped", replica.root)
    reports: list[FixityReport] = []
    for copy in roots:
        if not quota or (reports and time.monotonic() >= deadline):
            break  # (the archive itself gets at least one package, whatever the budget)
        key = str(copy.resolve()) if copy else str(primary_root(settings))
        codes = store.least_recently_checked(key, quota)
        report = check_archive(
            settings, store, user=user, codes=codes, copy=copy, scope="rolling", deadline=deadline
        )
        report.quota, report.behind = quota, len(report.checks) < len(codes)
        if report.behind:
            log.warning(
                "rolling fixity check of %s checked %d of %d packages before its budget ran out; raise "
                "fixity.rolling_budget_seconds or cycle_days",
                key,
                len(report.checks),
                quota,
            )
        for problem in report.problems:
            log.error("fixity: %s %s: %s (%s)", problem.kind, problem.path, problem.detail, key)
        reports.append(report)
    return reports


def run_rolling_if_due(settings: Settings, store: Store, *, user: str = "watcher") -> list[FixityReport]:
    """For the watcher's loop: a rolling check when `fixity.rolling_every_minutes` have passed
    since the last one began, else nothing. Never raises for damage (it is recorded and logged)."""
    if not rolling_due(settings, store):
        return []
    return rolling_check(settings, store, user=user)
