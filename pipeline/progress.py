"""How the batch run tells a person what it is doing; the CLI plugs in Rich progress bars."""

from __future__ import annotations

from typing import Protocol

from pipeline.models import ItemResult, PageResult


class BatchObserver(Protocol):
    def batch_started(self, batch_id: str, items: int, pages: int) -> None: ...

    def item_started(self, archive_code: str, pages: int) -> None: ...

    def page_done(self, archive_code: str, page: PageResult) -> None: ...

    def item_done(self, item: ItemResult) -> None: ...


class SilentObserver:
    def batch_started(self, batch_id: str, items: int, pages: int) -> None:
        pass

    def item_started(self, archive_code: str, pages: int) -> None:
        pass

    def page_done(self, archive_code: str, page: PageResult) -> None:
        pass

    def item_done(self, item: ItemResult) -> None:
        pass


_observer: BatchObserver = SilentObserver()


def set_observer(observer: BatchObserver | None) -> None:
    global _observer
    _observer = observer or SilentObserver()


def observer() -> BatchObserver:
    return _observer
