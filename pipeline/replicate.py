"""A second copy of the archive, brought up to date and verified; repair of a package from it.

`replicate` registers the copy's root and mirrors the primary onto it: new and rescanned
packages (a rescanned package's earlier copy moves to the copy's .superseded/, as on the
primary), the primary's superseded packages, and disposals (a destroyed item's package is
removed from the copy and its tombstone written there). Each package is written to the copy's
.staging/, fsynced, read back past the page cache and checked against its manifest, made
read-only and renamed into place; only then is it recorded as verified. A package the
registry already lists as verified with the same manifest, and still there, is not copied
again. A damaged primary package is never copied: it is reported (repair it first).

`repair` restores a damaged package from a copy after checking the copy's package as fully
as a fixity check does (manifest, the state store's PDF hash, the recorded manifest
baseline); if the copy is damaged too, it refuses and changes nothing. The damaged package
is kept aside in .damaged/.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pipeline.archive import (
    DECISIONS_NAME,
    MANIFEST_NAME,
    ArchiveLayout,
    make_read_only,
    read_manifest,
    remove_tree,
    sha256_of,
)
from pipeline.errors import ConfigError, FixityFailed, NotFound, RepairRefused
from pipeline.fixity import Problem, check_archive, check_package, primary_root
from pipeline.settings import Settings
from pipeline.store import Store


@dataclass
class ReplicateOutcome:
    root: str
    copied: list[str] = field(default_factory=list)
    already: int = 0  # there and verified: nothing copied
    superseded: list[str] = field(default_factory=list)  # earlier packages copied to .superseded/
    removed: list[str] = field(default_factory=list)  # destroyed items taken off the copy
    problems: list[Problem] = field(default_factory=list)


def _stamp() -> str:
    return f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}"


def copy_package(source: Path, target: Path, staging_root: Path) -> None:
    """Copy a package folder to `target` atomically and verified: staging, fsync, read back
    (past the page cache) against the manifest, read-only, rename. FixityFailed if it differs."""
    staging_root.mkdir(parents=True, exist_ok=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = staging_root / f"{target.name}.{uuid.uuid4().hex}"
    staging.mkdir()
    try:
        for path in sorted(source.iterdir()):
            if path.is_file() and not path.is_symlink():
                _copy_synced(path, staging / path.name)
        entries = read_manifest(staging / MANIFEST_NAME)
        for name, expected in entries.items():
            if not (staging / name).is_file() or sha256_of(staging / name)[0] != expected:
                raise FixityFailed(
                    f"{target.name}/{name}: the copy written to {target.parent} does not match"
                )
        make_read_only(staging)
        os.replace(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def _copy_synced(source: Path, target: Path) -> None:
    with source.open("rb") as src, target.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
        dst.flush()
        os.fsync(dst.fileno())
        os.posix_fadvise(dst.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)  # the check reads the disk


def replica_root(settings: Settings, root: Path) -> Path:
    """The copy's root, resolved; never the primary archive, inside it, or holding it."""
    target = root.expanduser().resolve()
    primary = primary_root(settings)
    if target == primary or primary in target.parents or target in primary.parents:
        raise ConfigError(f"{root} is the archive itself, inside it or above it; a copy must be elsewhere")
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{root} is not a folder")
    return target


def replicate(settings: Settings, store: Store, root: Path, *, user: str) -> ReplicateOutcome:
    target = replica_root(settings, root)
    target.mkdir(parents=True, exist_ok=True)
    key = str(target)
    store.register_replica(key, user)
    primary, copy = ArchiveLayout(primary_root(settings)), ArchiveLayout(target)
    outcome = ReplicateOutcome(key)
    packages = store.current_packages()
    _carry_disposals(store, primary, copy, set(packages), outcome)
    verified = store.replica_copies(key)
    baselines = store.baselines(packages)
    for code, pdf in sorted(packages.items()):
        if not primary.folder(code).is_dir():
            outcome.problems.append(Problem(code, f"{code}/", "missing", "not in the primary archive"))
            continue
        here = copy.manifest(code)
        known = verified.get(code)
        source_manifest = sha256_of(primary.manifest(code))[0] if primary.manifest(code).is_file() else ""
        if known and here.is_file() and known.manifest_sha256 == source_manifest == sha256_of(here)[0]:
            outcome.already += 1
            _sync_decisions(primary.folder(code), copy.folder(code))
            continue
        check = check_package(primary.root, code, pdf, baselines.get((code, pdf)))
        if not check.ok:
            outcome.problems.extend(check.problems)  # never copy damage: repair the primary first
            continue
        if copy.folder(code).exists():
            _set_aside(copy, code, primary)
        try:
            copy_package(primary.folder(code), copy.folder(code), copy.staging)
        except FixityFailed as exc:
            outcome.problems.append(Problem(code, f"{code}/", "damaged", str(exc)))
            continue
        store.record_replica_copy(key, code, pdf, check.manifest_sha256)
        outcome.copied.append(code)
    for folder in sorted(primary.superseded.iterdir()) if primary.superseded.is_dir() else []:
        if folder.is_dir() and not (copy.superseded / folder.name).exists():
            try:
                copy_package(folder, copy.superseded / folder.name, copy.staging)
                outcome.superseded.append(folder.name)
            except (FixityFailed, OSError, ValueError) as exc:
                outcome.problems.append(
                    Problem(folder.name, f".superseded/{folder.name}/", "damaged", str(exc))
                )
    store.finish_replication(
        key,
        user,
        {
            "copied": len(outcome.copied),
            "already": outcome.already,
            "superseded": len(outcome.superseded),
            "removed": outcome.removed,
            "problems": [p.to_dict() for p in outcome.problems[:50]],
        },
    )
    return outcome


def _set_aside(copy: ArchiveLayout, code: str, primary: ArchiveLayout) -> None:
    """Move the copy's older package of `code` into its .superseded/, under the name the primary
    gave the same package there (so the superseded folders mirror), or a new one."""
    name = f"{code}.{_stamp()}"
    old = copy.manifest(code)
    if old.is_file():
        digest = sha256_of(old)[0]
        for kept in primary.superseded_of(code):
            if (kept / MANIFEST_NAME).is_file() and sha256_of(kept / MANIFEST_NAME)[0] == digest:
                name = kept.name
                break
    copy.superseded.mkdir(parents=True, exist_ok=True)
    destination = copy.superseded / name
    if destination.exists():  # the primary's superseded copy is already there: this one is spare
        remove_tree(copy.folder(code))
    else:
        os.replace(copy.folder(code), destination)


def _sync_decisions(source: Path, target: Path) -> None:
    """The QA history beside a package changes after packaging; the copy follows it."""
    here, there = source / DECISIONS_NAME, target / DECISIONS_NAME
    if here.is_file() and (not there.is_file() or here.read_bytes() != there.read_bytes()):
        tmp = target / f".{DECISIONS_NAME}.{uuid.uuid4().hex}.tmp"
        _copy_synced(here, tmp)
        os.replace(tmp, there)


def _carry_disposals(
    store: Store, primary: ArchiveLayout, copy: ArchiveLayout, current: set[str], outcome: ReplicateOutcome
) -> None:
    """Destroyed items: off the copy (current and superseded packages), their tombstones onto it."""
    for tomb in store.tombstones():
        code = tomb.archive_code
        if code in current:
            continue  # packaged again after the disposal (a new item under the same code)
        gone = [copy.folder(code), *copy.superseded_of(code)]
        if any(p.exists() for p in gone):
            for path in gone:
                remove_tree(path)
            store.forget_replica_copy(outcome.root, code)
            outcome.removed.append(code)
        source = primary.tombstone(code)
        if source.is_file() and not copy.tombstone(code).is_file():
            copy.disposed.mkdir(parents=True, exist_ok=True)
            _copy_synced(source, copy.tombstone(code))
            os.chmod(copy.tombstone(code), 0o444)


# ---------------------------------------------------------------- repair


@dataclass
class RepairOutcome:
    archive_code: str
    repaired: bool
    problems_before: list[Problem]
    kept_aside: str = ""


def repair(settings: Settings, store: Store, code: str, source_root: Path, *, user: str) -> RepairOutcome:
    pdf = store.current_packages().get(code)
    if pdf is None:
        raise NotFound(f"no package in the archive for {code}")
    source = source_root.expanduser().resolve()
    primary = ArchiveLayout(primary_root(settings))
    baseline = store.baselines([code]).get((code, pdf))
    damage = check_package(primary.root, code, pdf, baseline)
    if damage.ok:
        store.audit(user, "repair", code, {"from": str(source), "repaired": False, "why": "intact"})
        return RepairOutcome(code, False, [])
    spare = check_package(source, code, pdf, baseline)
    if not spare.ok:
        store.audit(
            user,
            "repair.refused",
            code,
            {"from": str(source), "copy_problems": [p.to_dict() for p in spare.problems[:20]]},
        )
        listed = "; ".join(f"{p.kind} {p.path}: {p.detail}" for p in spare.problems[:5])
        raise RepairRefused(f"the copy of {code} in {source} is damaged too ({listed}); nothing was changed")
    staging_target = primary.staging / f"{code}.repair.{uuid.uuid4().hex}"
    copy_package(source / code, staging_target, primary.staging)
    kept = ""
    if primary.folder(code).exists():
        primary.damaged.mkdir(parents=True, exist_ok=True)
        aside = primary.damaged / f"{code}.{_stamp()}"
        os.replace(primary.folder(code), aside)
        kept = str(aside)
    os.replace(staging_target, primary.folder(code))
    store.audit(
        user,
        "repair",
        code,
        {
            "from": str(source),
            "repaired": True,
            "problems": [p.to_dict() for p in damage.problems[:20]],
            "kept_aside": kept,
        },
    )
    after = check_archive(settings, store, user=user, codes=[code], scope="repair")
    if not after.ok:
        raise FixityFailed(f"{code} was restored from {source} but does not check clean afterwards")
    return RepairOutcome(code, True, damage.problems, kept)
