"""The archived bytes are the bytes read, and one page never takes more than bounded memory.

Real components throughout: Pillow, pikepdf, poppler, RapidOCR, Tesseract; no mocks. Files are
swapped, planted and oversized on disk exactly as a hostile tester would do it.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import stat
import struct
import subprocess
import sys
import tempfile
import textwrap
import time
import zlib
from pathlib import Path

import pikepdf
import pikepdf.pdfa
import pytest
from PIL import Image

from pipeline import process
from pipeline.errors import ConfigError
from pipeline.models import Severity
from pipeline.pages import SnapshotArea, release_snapshots, snapshot_area, source_change
from pipeline.settings import ImagingSettings
from pipeline.tempfiles import use_private_tmp
from pipeline.verify import check_pages
from tests.conftest import ROOT, make_settings


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _page(samples_module, title: str, line: str, seed: int = 1) -> Image.Image:  # type: ignore[no-untyped-def]
    return samples_module.render_page(title, [line], [], size_mm=(148, 80), seed=seed)


def _process_all(planned, settings):  # type: ignore[no-untyped-def]
    cache = settings.work_dir / "pages"
    cache.mkdir(parents=True, exist_ok=True)
    pool = process.engine_pool(settings)
    return [process.process_page(p, seq, settings, pool, cache) for seq, p in enumerate(planned, start=1)]


def _bilevel_png(path: Path, width: int, height: int) -> None:
    """A white bilevel PNG of any size in a few hundred KB, written chunk by chunk (no big image)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\x00" + b"\xff" * ((width + 7) // 8)
    per_block = max(1, (1 << 20) // len(row))
    compressor = zlib.compressobj(9)
    parts, done = [], 0
    while done < height:
        n = min(per_block, height - done)
        parts.append(compressor.compress(row * n))
        done += n
    parts.append(compressor.flush())
    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
    )


# ------------------------------------------------------------------ (a) a page swapped after planning


def test_a_page_swapped_after_planning_archives_what_was_read(tmp_path: Path, samples_module) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path / "home")
    item = tmp_path / "batch" / "SWAP-0001"
    item.mkdir(parents=True)
    genuine, forged = tmp_path / "genuine.png", tmp_path / "forged.png"
    _page(samples_module, "投保单", "保险合同号P1的投保单。").save(genuine, dpi=(300, 300))
    _page(samples_module, "理赔申请书", "伪造的理赔申请材料。", seed=2).save(forged, dpi=(300, 300))
    genuine_sha, forged_sha = _sha(genuine), _sha(forged)
    (item / "0001.png").write_bytes(genuine.read_bytes())

    planned, problems = process.plan_item(item, settings)
    assert not problems and [p.sha256 for p in planned] == [genuine_sha]
    key = process.item_input_key(planned, problems, None, settings)
    # the hostile step: the file is replaced after planning, before the page is read
    (item / "0001.png").write_bytes(forged.read_bytes())

    [page] = _process_all(planned, settings)
    assert page.source == "0001.png" and page.source_sha256 == genuine_sha
    assert "投保单" in page.text and "理赔" not in page.text  # decoded from the snapshot
    fingerprint = process.settings_fingerprint(settings)
    cached = settings.work_dir / "pages" / f"{process.page_key(genuine_sha, 0, fingerprint)}_page.json"
    assert "投保单" in "".join(line["text"] for line in json.loads(cached.read_text())["lines"])
    assert not (
        settings.work_dir / "pages" / f"{process.page_key(forged_sha, 0, fingerprint)}_page.json"
    ).exists()

    item_result = process.package_item("SWAP-0001", None, [page], problems, key, "b1", settings)
    changed = [f for f in item_result.findings if f.code == "source_changed"]
    assert len(changed) == 1 and changed[0].severity == Severity.WARNING and changed[0].file == "0001.png"
    assert genuine_sha in changed[0].message and planned[0].snapshot.read_at in changed[0].message
    assert str(item_result.verdict) == "needs_qa"
    record = json.loads(Path(item_result.record_path or "").read_text(encoding="utf-8"))
    assert [p["source_sha256"] for p in record["pages"]] == [genuine_sha]
    assert record["input_key"] == key
    pdf_text = subprocess.run(
        ["pdftotext", item_result.pdf_path or "", "-"], capture_output=True, text=True, check=True
    ).stdout
    assert "投保单" in pdf_text.replace(" ", "") and "理赔" not in pdf_text

    # later runs: the forged bytes are read as themselves, the genuine bytes give the genuine page
    again, _ = process.plan_item(item, settings)
    [forged_page] = _process_all(again, settings)
    assert forged_page.source_sha256 == forged_sha and "理赔" in forged_page.text
    (item / "0001.png").write_bytes(genuine.read_bytes())
    genuine_again, _ = process.plan_item(item, settings)
    [genuine_page] = _process_all(genuine_again, settings)
    assert genuine_page.source_sha256 == genuine_sha and "投保单" in genuine_page.text
    assert genuine_page.image_path == page.image_path  # the cache under the genuine hash is intact
    for plan in (planned, again, genuine_again):
        release_snapshots(plan)


def test_a_source_touched_but_unchanged_is_not_reported(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    item = tmp_path / "T-0001"
    item.mkdir()
    Image.new("L", (200, 100), 255).save(item / "0001.png")
    [planned], _ = process.plan_item(item, settings)
    snap = planned.snapshot
    os.utime(item / "0001.png", ns=(snap.mtime_ns + 10**9, snap.mtime_ns + 10**9))
    assert source_change(snap) is None  # same bytes: hashed again, found equal
    data = bytearray((item / "0001.png").read_bytes())
    data[-20] ^= 0xFF  # same size, other content
    (item / "0001.png").write_bytes(bytes(data))
    assert "SHA-256" in (source_change(snap) or "")
    (item / "0001.png").unlink()
    assert "removed" in (source_change(snap) or "")
    release_snapshots([planned])


# ------------------------------------------------------------------ (b) identical bytes, two files


def test_identical_bytes_in_two_items_each_record_names_its_own_file(tmp_path: Path, samples_module) -> None:  # type: ignore[no-untyped-def]
    settings = make_settings(tmp_path / "home")
    first, second = tmp_path / "A-0001", tmp_path / "B-0002"
    first.mkdir()
    second.mkdir()
    _page(samples_module, "投保单", "保险合同号P1的投保单。").save(first / "0001.png", dpi=(300, 300))
    for name in ("0003.png", "0005.png"):  # the same bytes again, twice, under other names
        (second / name).write_bytes((first / "0001.png").read_bytes())

    plan_a, _ = process.plan_item(first, settings)
    plan_b, _ = process.plan_item(second, settings)
    pages_a = _process_all(plan_a, settings)
    pages_b = _process_all(plan_b, settings)  # both cache hits on the first item's result
    assert [p.source for p in pages_b] == ["0003.png", "0005.png"] and [p.seq for p in pages_b] == [1, 2]
    assert len({p.source_sha256 for p in pages_a + pages_b}) == 1
    for code, plan, pages in (("A-0001", plan_a, pages_a), ("B-0002", plan_b, pages_b)):
        key = process.item_input_key(plan, [], None, settings)
        result = process.package_item(code, None, pages, [], key, "b1", settings)
        record = json.loads(Path(result.record_path or "").read_text(encoding="utf-8"))
        names = [p["source"] for p in record["pages"]]
        assert names == (["0001.png"] if code == "A-0001" else ["0003.png", "0005.png"])
        assert not [f for f in result.findings if f.code == "source_changed"]

    # one copy on disk for the shared bytes, removed only when its last holder lets go
    copy = plan_a[0].snapshot.path
    assert copy == plan_b[0].snapshot.path == plan_b[1].snapshot.path
    assert release_snapshots(plan_a) == 0 and copy.exists()
    assert release_snapshots(plan_b) == 1 and not copy.exists()


# ------------------------------------------------------------------ (c) bounded work per page


BOMB_SCRIPT = textwrap.dedent(
    """
    import json, resource, sys, time
    from pathlib import Path
    from pipeline import process
    from pipeline.settings import Settings

    started = time.monotonic()
    settings = Settings(home=sys.argv[2])
    settings.ensure_dirs()
    planned, problems = process.plan_item(Path(sys.argv[1]), settings)
    cache = settings.work_dir / "pages"
    cache.mkdir(parents=True, exist_ok=True)
    pool = process.engine_pool(settings)
    pages = [process.process_page(p, i, settings, pool, cache) for i, p in enumerate(planned, 1)]
    print(json.dumps({
        "pages": [[p.source, p.error_code, p.error] for p in pages],
        "problems": [p.reason for p in problems],
        "engines": pool._created,
        "seconds": time.monotonic() - started,
        # getrusage's ru_maxrss survives execve (it would report pytest's own peak); VmHWM is
        # the high-water mark of this process's memory since exec
        "peak_mb": int(next(l for l in open("/proc/self/status") if l.startswith("VmHWM")).split()[1]) / 1024,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }))
    """
)


def test_a_huge_png_is_refused_from_its_header_with_little_memory(tmp_path: Path) -> None:
    item = tmp_path / "BOMB-0001"
    item.mkdir()
    _bilevel_png(item / "0001.png", 60_000, 60_000)  # 3.6 gigapixels
    _bilevel_png(item / "0002.png", 30_000, 30_000)  # under Pillow's own limit, over ours
    assert (item / "0001.png").stat().st_size < 1_000_000
    run = subprocess.run(
        [sys.executable, "-c", BOMB_SCRIPT, str(item), str(tmp_path / "home")],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    out = json.loads(run.stdout.splitlines()[-1])
    (name1, code1, error1), (name2, code2, error2) = out["pages"]
    assert (name1, code1, name2, code2) == ("0001.png", "page_too_large", "0002.png", "page_too_large")
    assert "3,600,000,000 pixels" in error1 and "36,000,000" in error1 and "imaging.max_page_pixels" in error1
    assert "30,000 x 30,000 pixels" in error2
    assert out["engines"] == 0  # refused before any OCR engine was needed
    assert out["peak_mb"] < 200, (
        out
    )  # the whole process: interpreter, numpy, OpenCV, Pillow, pikepdf (~85 MB)
    assert out["seconds"] < 20, out


def test_page_too_large_finding_names_file_size_limit_and_setting(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home")
    item = tmp_path / "BIG-0001"
    item.mkdir()
    _bilevel_png(item / "0001.png", 20_000, 4_000)
    planned, _ = process.plan_item(item, settings)
    [page] = _process_all(planned, settings)
    [finding] = check_pages([page], settings.verify)
    assert finding.code == "page_too_large" and finding.severity == Severity.ERROR
    assert finding.file == "0001.png" and finding.page == 1
    for part in ("0001.png", "20,000 x 4,000 pixels", "36,000,000", "imaging.max_page_pixels"):
        assert part in finding.message
    release_snapshots(planned)


def test_a_multipage_tiff_with_one_oversized_frame(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home", imaging=ImagingSettings(max_page_pixels=1_000_000))
    item = tmp_path / "TIF-0001"
    item.mkdir()
    frames = [Image.new("1", size, 1) for size in ((800, 600), (1100, 1000), (600, 800))]
    frames[0].save(
        item / "0001.tif", save_all=True, append_images=frames[1:], compression="group4", dpi=(300, 300)
    )
    planned, problems = process.plan_item(item, settings)
    assert not problems and [(p.frame, p.kind) for p in planned] == [(0, "tiff"), (1, "tiff"), (2, "tiff")]
    pages = _process_all(planned, settings)
    assert [p.error_code for p in pages] == [None, "page_too_large", None]
    assert [p.frame for p in pages] == [0, 1, 2] and pages[0].blank and pages[2].blank
    assert "frame 2 is 1,100 x 1,000 pixels" in (pages[1].error or "")
    release_snapshots(planned)


def test_a_pdf_page_whose_size_at_its_dpi_is_too_large_is_not_rendered(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home", imaging=ImagingSettings(max_page_pixels=2_000_000))
    item = tmp_path / "PDF-0001"
    item.mkdir()
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(595, 842))  # A4: 2480 x 3509 at 300 dpi, over 2 million
    pdf.add_blank_page(page_size=(288, 288))  # 4 inches square: 1200 x 1200 at 300 dpi
    pdf.add_blank_page(page_size=(100 * 72, 100 * 72))  # 100 inches square: 30000 x 30000
    pdf.save(item / "scan.pdf")
    planned, _ = process.plan_item(item, settings)
    started = time.monotonic()
    pages = _process_all(planned, settings)
    assert time.monotonic() - started < 20
    assert [p.error_code for p in pages] == ["page_too_large", None, "page_too_large"]
    assert "page 1 at 300 dpi would be 2,480 x 3,509 pixels" in (pages[0].error or "")  # ceil(595 / 72 * 300)
    assert "page 3 at 300 dpi would be 30,000 x 30,000 pixels" in (pages[2].error or "")
    assert pages[1].blank and (pages[1].width, pages[1].height) == (1200, 1200)
    assert [p.frame for p in pages] == [0, 1, 2] and {p.source for p in pages} == {"scan.pdf"}
    release_snapshots(planned)


def test_a_file_over_max_file_mb_is_a_problem_and_is_not_copied(tmp_path: Path) -> None:
    settings = make_settings(tmp_path / "home", imaging=ImagingSettings(max_file_mb=1))
    item = tmp_path / "HUGE-0001"
    item.mkdir()
    (item / "0001.png").write_bytes(os.urandom(1_500_000))
    Image.new("L", (100, 100), 255).save(item / "0002.png")
    planned, problems = process.plan_item(item, settings)
    assert [p.name for p in planned] == ["0002.png"]
    [problem] = problems
    assert (
        problem.file == "0001.png"
        and "1,500,000 bytes" in problem.reason
        and "imaging.max_file_mb" in problem.reason
    )
    area = snapshot_area(settings.work_dir)
    assert [p.stat().st_size for p in area.folder.iterdir()] == [(item / "0002.png").stat().st_size]
    release_snapshots(planned)


# ------------------------------------------------------------------ snapshots of a killed run

AREA_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys, time
    from pathlib import Path
    from pipeline.pages import snapshot_area
    area = snapshot_area(Path(sys.argv[1]))
    area.add(Path(sys.argv[2]), 1 << 20, "h")
    print(area.folder, flush=True)
    if sys.argv[3] == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    time.sleep(60)
    """
)


def test_snapshots_of_a_killed_run_are_cleaned_by_the_next_and_a_live_run_is_left_alone(
    tmp_path: Path,
) -> None:
    work = tmp_path / "work"
    source = tmp_path / "page.png"
    Image.new("L", (50, 50), 255).save(source)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    killed = subprocess.run(
        [sys.executable, "-c", AREA_SCRIPT, str(work), str(source), "kill"],
        capture_output=True,
        text=True,
        env=env,
    )
    dead_folder = Path(killed.stdout.strip())
    assert killed.returncode == -signal.SIGKILL and (dead_folder / _sha(source)).exists()
    alive = subprocess.Popen(
        [sys.executable, "-c", AREA_SCRIPT, str(work), str(source), "live"],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        assert alive.stdout is not None
        live_folder = Path(alive.stdout.readline().strip())
        area = SnapshotArea(work)  # a new run on the same work folder
        assert not dead_folder.exists() and not dead_folder.with_name(dead_folder.name + ".lock").exists()
        assert (live_folder / _sha(source)).exists()
    finally:
        alive.kill()
        alive.wait()
    assert area.sweep() == [live_folder.name] and not live_folder.exists()
    area.close()
    assert not area.folder.exists()


# ------------------------------------------------------------------ (d) temporary files, Tesseract


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(folder)): (p.lstat().st_mode, p.lstat().st_size) for p in folder.rglob("*")}


def test_tesseract_writes_nothing_outside_home_and_follows_no_planted_link(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, samples_module
) -> None:  # type: ignore[no-untyped-def]
    import numpy as np
    import pytesseract

    from pipeline.ocr.tesseract import ChildEnviron, TesseractEngine, _run, judge_up_down_osd

    system_tmp = tmp_path / "system-tmp"  # stands for /tmp: what tempfile.gettempdir() gave before
    system_tmp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(system_tmp))
    monkeypatch.setenv("TMPDIR", str(system_tmp))
    monkeypatch.delenv("OMP_THREAD_LIMIT", raising=False)
    victim = tmp_path / "victim.txt"
    victim.write_text("someone else's file\n")
    victim.chmod(0o644)
    (system_tmp / "archive-capture").mkdir()
    planted = system_tmp / "archive-capture" / "tesseract-omp1"
    planted.symlink_to(victim)
    before = _listing(system_tmp)

    home = tmp_path / "home"
    private = use_private_tmp(home)
    assert private == home / "tmp" and tempfile.gettempdir() == str(private)
    assert os.environ["TMPDIR"] == str(private) and stat.S_IMODE(private.stat().st_mode) == 0o700

    image = np.asarray(_page(samples_module, "养老保险", "保险合同号 P2012-000123"))
    page = TesseractEngine(threads=1).recognise(image)
    assert "000123" in page.text.replace(" ", "")
    judge_up_down_osd(image, threads=1)

    assert victim.read_text() == "someone else's file\n" and stat.S_IMODE(victim.stat().st_mode) == 0o644
    assert planted.is_symlink() and os.readlink(planted) == str(victim)
    assert _listing(system_tmp) == before  # nothing written to the system temp folder
    assert list(private.iterdir()) == []  # pytesseract's own files were made here and removed
    # tesseract gets its OpenMP limit from the environment pytesseract hands to the child...
    assert isinstance(pytesseract.pytesseract.environ, ChildEnviron)
    assert "OMP_THREAD_LIMIT" not in os.environ  # ...and ours is untouched

    def child(**_: object) -> str:
        env = pytesseract.pytesseract.environ  # what pytesseract passes as env= to subprocess
        return subprocess.run(
            ["sh", "-c", 'echo "$OMP_THREAD_LIMIT $TMPDIR"'], env=env, capture_output=True, text=True
        ).stdout.strip()

    assert _run(child, timeout=5, threads=3) == f"3 {private}"
    assert child() == f"1 {private}"


def test_private_tmp_refuses_a_link_and_repairs_its_mode(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / "tmp").symlink_to(elsewhere)
    with pytest.raises(ConfigError, match="not a link"):
        use_private_tmp(home)
    (home / "tmp").unlink()
    (home / "tmp").mkdir(mode=0o777)
    os.chmod(home / "tmp", 0o777)
    from pipeline.tempfiles import private_tmp

    assert stat.S_IMODE(private_tmp(home).stat().st_mode) == 0o700


def test_a_page_under_3_points_is_refused_and_the_rest_of_its_item_is_a_valid_pdfa(tmp_path: Path) -> None:
    """A 1 x 1 pixel image or a 2-point PDF page is no scan and can be no PDF/A page (its boxes
    must be 3 points a side): refused with its size, the item's other pages packaged."""
    settings = make_settings(tmp_path / "home")
    item = tmp_path / "TINY-0001"
    item.mkdir()
    Image.new("L", (1, 1), 255).save(item / "0001.png")
    Image.new("L", (12, 300), 0).save(item / "0002.png", dpi=(300, 300))  # 2.88 pt wide
    Image.new("L", (13, 300), 0).save(item / "0003.png", dpi=(300, 300))  # 3.12 pt: small but a page
    pdf = pikepdf.new()
    pdf.add_blank_page(page_size=(3, 400)).obj.MediaBox = pikepdf.Array(
        [0, 0, 2, 400]
    )  # as some exports write
    pdf.add_blank_page(page_size=(288, 288))
    pdf.save(item / "0004.pdf")
    planned, problems = process.plan_item(item, settings)
    pages = _process_all(planned, settings)
    assert [(p.source, p.frame, p.error_code) for p in pages] == [
        ("0001.png", 0, "page_too_small"),
        ("0002.png", 0, "page_too_small"),
        ("0003.png", 0, None),
        ("0004.pdf", 0, "page_too_small"),
        ("0004.pdf", 1, None),
    ]
    assert "the image is 1 x 1 pixels at 300 dpi (0.24 x 0.24 pt)" in (pages[0].error or "")
    assert "page 1 (2.00 x 400.00 pt)" in (pages[3].error or "")
    findings = check_pages(pages, settings.verify)
    small = [f for f in findings if f.code == "page_too_small"]
    assert [(f.file, f.page, f.severity) for f in small] == [
        ("0001.png", 1, Severity.ERROR),
        ("0002.png", 2, Severity.ERROR),
        ("0004.pdf", 4, Severity.ERROR),
    ]
    assert all("3 pt" in f.message for f in small)
    packaged = process.package_item("TINY-0001", None, pages, problems, "key", "batch", settings)
    assert packaged.pdf_path and packaged.pdfa_valid, packaged.findings
    assert pikepdf.pdfa.validate_written(Path(packaged.pdf_path), "2b").passed
    with pikepdf.open(packaged.pdf_path) as doc:
        assert len(doc.pages) == 2
    assert {f.code for f in packaged.findings} >= {"page_too_small"}
    release_snapshots(planned)


@pytest.mark.parametrize(
    ("script", "error"),
    [
        ("", "PageNotRead"),  # no pdftoppm to be found: the install's fault, not the file's
        ("#!/bin/sh\nkill -TERM $$\n", "PageNotRead"),  # stopped from outside
        ("#!/bin/sh\nkill -SEGV $$\n", "PageReadError"),  # a crash of its own: the file's doing
    ],
)
def test_a_pdf_page_not_rendered_is_blamed_on_the_file_only_when_the_file_is_the_reason(  # type: ignore[no-untyped-def]
    tmp_path, monkeypatch, script, error
) -> None:
    from PIL import Image

    from pipeline import errors, pages

    pdf = tmp_path / "scan.pdf"
    Image.new("L", (300, 400), 255).save(pdf, resolution=100)
    shims = tmp_path / "bin"
    shims.mkdir()
    if script:
        (shims / "pdftoppm").write_text(script)
        (shims / "pdftoppm").chmod(0o755)
    monkeypatch.setenv("PATH", str(shims))
    with pytest.raises(errors.CaptureError) as raised:
        pages._render_pdf_page(pdf, 0, 100, 10**8, "the page is")
    assert type(raised.value).__name__ == error
