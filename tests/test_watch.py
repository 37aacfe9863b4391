"""The watch folder on a real filesystem with the real flow: readiness, claims, quarantine, rescans."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest

from pipeline import watch
from pipeline.flows.watch import watch_folder
from tests.conftest import import_catalogue, make_settings


def _page(samples_module, text: str, seed: int):  # type: ignore[no-untyped-def]
    return samples_module.render_page("业务单", [text], [], size_mm=(148, 105), seed=seed)


def _batch(root: Path, name: str, items: dict[str, str], samples_module, marker: bool = True) -> Path:  # type: ignore[no-untyped-def]
    batch = root / name
    for n, (code, text) in enumerate(items.items()):
        (batch / code).mkdir(parents=True)
        _page(samples_module, text, n).save(batch / code / "0001.png", dpi=(300, 300))
    if marker:
        (batch / "READY").write_text("", encoding="utf-8")
    return batch


def _settings(tmp_path: Path, **watch_options):  # type: ignore[no-untyped-def]
    options = {
        "folder": str(tmp_path / "incoming"),
        "poll_seconds": 0.2,
        "quiet_seconds": 1.0,
        "stale_claim_seconds": 5.0,
        **watch_options,
    }
    settings = make_settings(tmp_path / "home", watch=options)
    (tmp_path / "incoming").mkdir(exist_ok=True)
    catalogue = tmp_path / "catalogue.csv"
    catalogue.write_text(
        "档号,页数\r\n" + "".join(f"W-{n:04d},1\r\n" for n in range(1, 10)), encoding="utf-8"
    )
    import_catalogue(settings, catalogue)
    return settings


def test_a_batch_still_being_copied_is_not_ready(tmp_path: Path) -> None:
    batch = tmp_path / "b1"
    (batch / "W-0001").mkdir(parents=True)
    tracker = watch.StabilityTracker(quiet_seconds=0.8)
    target = batch / "W-0001" / "0001.tif"
    seen = []
    with target.open("wb") as handle:
        for _ in range(8):  # a slow copy: the file grows every 0.15 s
            handle.write(b"x" * 1000)
            handle.flush()
            seen.append(tracker.ready(batch))
            time.sleep(0.15)
    assert seen == [None] * 8
    # a scanner that closes and reopens the same file: a new mtime restarts the quiet period
    target.write_bytes(target.read_bytes() + b"y")
    assert tracker.ready(batch) is None
    time.sleep(0.9)
    assert tracker.ready(batch) == "quiet"


def test_marker_and_manifest_modes_need_one_unchanged_look(tmp_path: Path) -> None:
    tracker = watch.StabilityTracker(quiet_seconds=3600)
    for name, mode in (("READY", "marker"), ("batch.json", "manifest"), ("batch.csv", "manifest")):
        batch = tmp_path / name.replace(".", "_")
        (batch / "W-0001").mkdir(parents=True)
        (batch / name).write_text("{}", encoding="utf-8")
        assert tracker.ready(batch) is None
        assert tracker.ready(batch) == mode
    plain = tmp_path / "plain"
    (plain / "W-0001").mkdir(parents=True)
    assert tracker.ready(plain) is None and tracker.ready(plain) is None  # waits for the quiet period


def test_two_claimers_race_and_exactly_one_wins(tmp_path: Path) -> None:
    areas = watch.Areas(tmp_path / "incoming")
    areas.ensure()
    for round_ in range(30):
        entry = areas.incoming / f"batch-{round_}"
        (entry / "W-0001").mkdir(parents=True)
        results: list[watch.Claim | None] = []
        barrier = threading.Barrier(2)

        def grab(
            entry: Path = entry,
            barrier: threading.Barrier = barrier,
            results: list[watch.Claim | None] = results,
        ) -> None:
            barrier.wait()
            results.append(watch.claim(entry, areas, watch.owner_id()))

        threads = [threading.Thread(target=grab) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sum(r is not None for r in results) == 1
    assert len(list(areas.processing.glob("claim-*"))) == 30


def test_manifests_are_read_and_bad_ones_refused(tmp_path: Path) -> None:
    (tmp_path / "batch.json").write_text(
        json.dumps({"station": "S3", "operator": "张", "scan_date": "2024-03-15", "items": ["W-0001"]}),
        encoding="utf-8",
    )
    assert watch.read_manifest(tmp_path)["items"] == ["W-0001"]  # type: ignore[index]
    (tmp_path / "batch.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(watch.ManifestError, match="not valid JSON"):
        watch.read_manifest(tmp_path)
    (tmp_path / "batch.json").unlink()
    (tmp_path / "batch.csv").write_bytes(
        "station,operator,档号\r\nS3,张,W-0001\r\nS3,张,W-0002\r\n".encode("gbk")
    )
    manifest = watch.read_manifest(tmp_path)
    assert manifest is not None and manifest["items"] == ["W-0001", "W-0002"] and manifest["station"] == "S3"


@pytest.fixture(scope="module")
def watched(tmp_path_factory, samples_module, prefect_harness):  # type: ignore[no-untyped-def]
    """One watcher run over a folder holding good batches and every kind of bad one."""
    tmp_path = tmp_path_factory.mktemp("watched")
    settings = _settings(tmp_path)
    incoming = settings.watch_dir
    _batch(incoming, "good-marker", {"W-0001": "第一件保险单"}, samples_module)
    quiet = _batch(incoming, "good-quiet", {"W-0002": "第二件保险单"}, samples_module, marker=False)
    with_manifest = _batch(
        incoming,
        "with-manifest",
        {"W-0003": "第三件", "W-0009": "多出来的一件"},
        samples_module,
        marker=False,
    )
    (with_manifest / "batch.json").write_text(
        json.dumps(
            {
                "station": "S1",
                "operator": "王",
                "scan_date": "2024-01-02",
                "items": ["W-0003", "W-0004", "X-9999"],
            }
        ),
        encoding="utf-8",
    )
    (incoming / "a-file.zip").write_bytes(b"PK")
    (incoming / "empty-batch").mkdir()
    (incoming / "empty-batch" / "READY").write_text("", encoding="utf-8")
    bad_manifest = _batch(incoming, "bad-manifest", {"W-0005": "第五件"}, samples_module, marker=False)
    (bad_manifest / "batch.json").write_text("{oops", encoding="utf-8")
    _batch(incoming, "evil;rm -rf ~", {"W-0006": "第六件"}, samples_module)
    del quiet
    messages: list[str] = []
    counts = watch_folder(settings, say=messages.append, until_idle=True)
    return settings, counts, messages


def test_good_batches_are_processed_once_and_moved_to_done(watched) -> None:  # type: ignore[no-untyped-def]
    settings, counts, messages = watched
    done = sorted(p.name for p in (settings.watch_dir / "done").iterdir())
    assert done == ["good-marker", "good-quiet", "with-manifest"]
    assert counts == {"done": 3, "quarantined": 4}
    assert sorted(p.name for p in settings.archive_dir.iterdir() if not p.name.startswith(".")) == [
        "W-0001",
        "W-0002",
        "W-0003",
        "W-0009",
    ]
    assert not list((settings.watch_dir / "processing").iterdir())
    assert any("claimed batch good-quiet (quiet)" in m for m in messages)
    assert any("claimed batch good-marker (marker)" in m for m in messages)


def test_manifest_expectations_become_findings(watched) -> None:  # type: ignore[no-untyped-def]
    settings, _, messages = watched
    reports = [json.loads(p.read_text(encoding="utf-8")) for p in settings.reports_dir.glob("*.json")]
    report = next(r for r in reports if r["manifest"])
    assert report["manifest"]["station"] == "S1"
    assert {f["archive_code"] for f in report["batch_findings"]} == {"W-0004", "X-9999"}
    extra = next(i for i in report["items"] if i["archive_code"] == "W-0009")
    assert "unexpected_item" in {f["code"] for f in extra["findings"]}
    assert any("not in the catalogue: X-9999" in m for m in messages)


def test_bad_batches_are_quarantined_with_a_reason_and_kept(watched) -> None:  # type: ignore[no-untyped-def]
    settings, _, _ = watched
    quarantine = settings.watch_dir / "quarantine"
    reasons = {}
    for folder in quarantine.iterdir():
        originals = [p for p in folder.iterdir() if p.name != "REASON.txt"]
        assert len(originals) == 1
        reasons[originals[0].name] = (folder / "REASON.txt").read_text(encoding="utf-8")
    assert set(reasons) == {"a-file.zip", "empty-batch", "bad-manifest", "evil;rm -rf ~"}
    assert "is a file" in reasons["a-file.zip"]
    assert "empty" in reasons["empty-batch"]
    assert "not valid JSON" in reasons["bad-manifest"]
    assert "characters outside" in reasons["evil;rm -rf ~"]
    assert (
        quarantine
        / next(f for f in quarantine.iterdir() if "evil" in f.name).name
        / "evil;rm -rf ~"
        / "W-0006"
        / "0001.png"
    ).exists()
    from pipeline.store import Store

    store = Store(settings.state_url)
    assert sum(1 for b in store.batches() if b.status == "quarantined" and b.reason) == 4
    store.close()


def test_a_vanishing_watch_folder_is_retried_not_fatal(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    away = tmp_path / "share-offline"
    settings.watch_dir.rename(away)
    stop = threading.Event()
    messages: list[str] = []
    runner = threading.Thread(target=lambda: watch_folder(settings, say=messages.append, stop=stop))
    runner.start()
    time.sleep(0.7)
    away.rename(settings.watch_dir)
    time.sleep(0.8)
    stop.set()
    runner.join(timeout=10)
    assert not runner.is_alive()
    assert any("not reachable" in m for m in messages)
    assert (settings.watch_dir / "processing").is_dir()  # it came back and was used again


def test_a_rescan_supersedes_the_earlier_package(tmp_path: Path, samples_module, prefect_harness) -> None:  # type: ignore[no-untyped-def]
    from pipeline.index.base import SearchQuery
    from pipeline.index.sqlite import SqliteIndex
    from pipeline.store import Store

    settings = _settings(tmp_path)
    _batch(settings.watch_dir, "first", {"W-0007": "原始扫描的旧内容"}, samples_module)
    watch_folder(settings, say=lambda m: None, until_idle=True)
    _batch(settings.watch_dir, "rescan", {"W-0007": "重新扫描的新内容"}, samples_module)
    watch_folder(settings, say=lambda m: None, until_idle=True)
    store = Store(settings.state_url)
    assert [p.status for p in store.packages("W-0007")] == ["superseded", "current"]
    store.close()
    kept = list((settings.archive_dir / ".superseded").iterdir())
    assert len(kept) == 1 and (kept[0] / "W-0007.pdf").exists()
    index = SqliteIndex(settings.index_path)
    assert index.search(SearchQuery("旧内容")).hits == []
    assert [h.archive_code for h in index.search(SearchQuery("新内容")).hits] == ["W-0007"]
    assert index.count_pages("W-0007") == 1
    index.close()
