"""Chinese analysis shared by every backend: fold to one script and width, then tokenise.

Text is folded (NFKC width folding, Traditional to Simplified with OpenCC, lower case);
CJK runs become overlapping character bigrams (and single characters), Latin letters and
digits become words. Queries go through the same analysis, so a Simplified query finds a
Traditional page and both backends agree.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from dataclasses import dataclass

import opencc

_CJK_RUN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+")
_WORD = re.compile(r"[0-9a-z]+")
_TOKEN = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]+|[0-9a-z]+")
_local = threading.local()


def _converter() -> opencc.OpenCC:
    conv = getattr(_local, "t2s", None)
    if conv is None:
        conv = opencc.OpenCC("t2s")
        _local.t2s = conv
    return conv


# Characters folded so far: every character is folded on its own, never by the phrase around it.
# OpenCC converts some phrases differently from their characters (乾隆 keeps 乾, 乾淨 becomes
# 干净), so a page folded whole and a short query folded alone could disagree (於乾 on a page
# with 於乾隆 was not found). One table for both keeps every substring of a page findable.
# OpenCC's character table keeps these (瞭 stays 瞭) and only its phrases turn them Simplified
# (瞭解 -> 了解, 藉口 -> 借口, 反覆 -> 反复), so they are folded here, in every context.
_PHRASE_ONLY = {"瞭": "了", "藉": "借", "沈": "沉", "覆": "复", "衹": "只", "甦": "苏", "彷": "仿"}
_SEEN: set[str] = set()
_TABLE: dict[int, str] = {ord(k): v for k, v in _PHRASE_ONLY.items()}


def _learn(chars: set[str]) -> None:
    converter = _converter()
    for ch in chars:
        folded = _PHRASE_ONLY.get(ch) or converter.convert(ch)
        if len(folded) == 1 and folded != ch:
            _TABLE[ord(ch)] = folded
        _SEEN.add(ch)


def fold(text: str) -> str:
    """One script (Simplified), one width, lower case; character positions are kept (1:1)."""
    text = unicodedata.normalize("NFKC", text)
    new = set(text) - _SEEN
    if new:
        _learn(new)
    return text.translate(_TABLE).lower()


def join_lines(lines: list[str]) -> str:
    """Join OCR lines into page text: no break between Chinese characters, a space otherwise."""
    out = ""
    for line in lines:
        if not line:
            continue
        if out and not (_CJK_RUN.match(out[-1]) and _CJK_RUN.match(line[0])):
            out += " "
        out += line
    return out


@dataclass(frozen=True)
class Analysed:
    bigrams: list[str]  # CJK bigrams in order; a single-character run contributes itself
    unigrams: list[str]  # every CJK character
    words: list[str]  # Latin/digit words


def analyse(text: str) -> Analysed:
    """Tokens of folded text for indexing."""
    folded = fold(text)
    bigrams: list[str] = []
    unigrams: list[str] = []
    for run in _CJK_RUN.findall(folded):
        unigrams.extend(run)
        if len(run) == 1:
            bigrams.append(run)
        else:
            bigrams.extend(run[i : i + 2] for i in range(len(run) - 1))
    words = _WORD.findall(folded)
    return Analysed(bigrams, unigrams, words)


def query_terms(query: str) -> list[str]:
    """The query's folded terms: CJK runs and Latin/digit words, in order."""
    return _TOKEN.findall(fold(query))
