"""The words the lexical (BM25) side of an index matches: lower-cased Latin words, and for Chinese jieba's
search-mode words plus character bigrams, without the function words that occur in every passage."""

from __future__ import annotations

import logging
import re
from functools import lru_cache

from seektune.text import CJK_IDEOGRAPHS

_CJK_RUN = re.compile(f"[{CJK_IDEOGRAPHS}]+")
_LATIN_WORD = re.compile(r"[^\W_]+")
# Chinese function words left out of the lexical side (they match every passage)
_ZH_STOP = frozenset("的 了 吗 呢 吧 啊 呀 我 你 您 他 她 它 们 我们 你们 是 有 在 和 与 就 都 也 还 能 会 要 可以 "
                     "一个 这 那 这个 那个 什么 怎么 怎样 如何 请问 想 一下 了解 是否 如果 多少 几".split())


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # not "Building prefix dict ..." on every first use
    return jieba


def lexical_tokens(text: str) -> list[str]:
    """Lower-cased words for Latin text; jieba's search-mode words for runs of Chinese ideographs."""
    jieba = _jieba() if _CJK_RUN.search(text) else None
    tokens: list[str] = []
    position = 0
    for match in _CJK_RUN.finditer(text):
        tokens += _LATIN_WORD.findall(text[position: match.start()].lower())
        run = match.group(0)
        tokens += [word for word in jieba.lcut_for_search(run) if word not in _ZH_STOP]
        # and character bigrams: a query's 退货 still meets a passage that jieba cut as 退 / 货物
        tokens += [run[i: i + 2] for i in range(len(run) - 1)]
        position = match.end()
    tokens += _LATIN_WORD.findall(text[position:].lower())
    return tokens

