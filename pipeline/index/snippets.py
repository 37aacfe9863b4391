"""Snippets: find the folded query terms in a page's original text and cut a window around them."""

from __future__ import annotations

from pipeline.index.analysis import fold


def _folded_with_map(text: str) -> tuple[str, list[int]]:
    """Fold character by character, remembering which original character each folded one came from."""
    out: list[str] = []
    origin: list[int] = []
    for i, ch in enumerate(text):
        folded = fold(ch)
        out.append(folded)
        origin.extend([i] * len(folded))
    return "".join(out), origin


def find_spans(text: str, terms: list[str]) -> list[tuple[int, int]]:
    """Where the folded terms occur in the original text, as merged [start, end) spans."""
    folded, origin = _folded_with_map(text)
    spans: list[tuple[int, int]] = []
    for term in terms:
        start = folded.find(term)
        while start != -1:
            end = start + len(term)
            spans.append((origin[start], origin[end - 1] + 1))
            start = folded.find(term, end)
    return _merge(spans)


def segments(text: str, terms: list[str]) -> list[tuple[str, bool]]:
    """The text cut into (piece, is_hit) for marking hits without building HTML by hand."""
    return split_at(text, find_spans(text, terms))


def split_at(text: str, spans: list[tuple[int, int]]) -> list[tuple[str, bool]]:
    """The text cut at sorted, non-overlapping [start, end) spans into (piece, is_hit)."""
    out: list[tuple[str, bool]] = []
    at = 0
    for start, end in spans:
        if start > at:
            out.append((text[at:start], False))
        out.append((text[start:end], True))
        at = end
    if at < len(text):
        out.append((text[at:], False))
    return out


def make_snippet(text: str, terms: list[str], width: int) -> tuple[str, list[tuple[int, int]]]:
    """A window of `width` characters either side of the first hit, with all hits inside it."""
    flat = text.replace("\n", " ")
    spans = find_spans(flat, terms)
    if not spans:
        return flat[: 2 * width].strip(), []
    lo = max(0, spans[0][0] - width)
    hi = min(len(flat), spans[0][1] + width)
    prefix = "…" if lo > 0 else ""
    suffix = "…" if hi < len(flat) else ""
    window = prefix + flat[lo:hi] + suffix
    shift = len(prefix) - lo
    inside = [(s + shift, e + shift) for s, e in spans if s >= lo and e <= hi]
    return window, _merge(inside)


def _merge(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for s, e in sorted(spans):
        if merged and s <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], e))
        else:
            merged.append((s, e))
    return merged
