"""How the batch run tells a person what it is doing; the CLI plugs in Rich progress bars.

The events are small values (never page images or OCR results), so they travel as JSON
lines from a batch's own process to the command that shows them (pipeline.batchrun).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Protocol

from pipeline.models import ItemResult


@dataclass(frozen=True)
class ItemOutcome:
    """What a person sees of a finished item."""

    archive_code: str
    verdict: str
    pages: int
    findings: int
    reused: bool

    @classmethod
    def of(cls, item: ItemResult) -> ItemOutcome:
        return cls(item.archive_code, str(item.verdict), item.page_count, len(item.findings), item.reused)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class BatchObserver(Protocol):
    def batch_started(self, batch_id: str, items: int, pages: int) -> None: ...

    def item_started(self, archive_code: str, pages: int) -> None: ...

    def page_done(self, archive_code: str) -> None: ...

    def item_done(self, item: ItemOutcome) -> None: ...


class SilentObserver:
    def batch_started(self, batch_id: str, items: int, pages: int) -> None:
        pass

    def item_started(self, archive_code: str, pages: int) -> None:
        pass

    def page_done(self, archive_code: str) -> None:
        pass

    def item_done(self, item: ItemOutcome) -> None:
        pass


_observer: BatchObserver = SilentObserver()


def set_observer(observer: BatchObserver | None) -> None:
    global _observer
    _observer = observer or SilentObserver()


def observer() -> BatchObserver:
    return _observer
