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
from functools import lru_cache

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


@lru_cache(maxsize=4096)
def _fold_short(text: str) -> str:
    return _converter().convert(unicodedata.normalize("NFKC", text)).lower()


def fold(text: str) -> str:
    """One script (Simplified), one width, lower case; character positions are kept (1:1)."""
    if len(text) < 64:
        return _fold_short(text)
    folded = _converter().convert(unicodedata.normalize("NFKC", text)).lower()
    return folded


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
