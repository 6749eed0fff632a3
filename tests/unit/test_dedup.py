import itertools
import random

import numpy as np
import pytest

from seektune.data.dedup import (
    Duplicate,
    LeakPair,
    _candidate_probability,
    cross_split_pairs,
    dedup_text,
    deduplicate,
    jaccard,
    lsh_bands,
    minhash_signatures,
    near_duplicate_pairs,
    normalise,
    shingles,
)

_SYLLABLES = ["ka", "lo", "mi", "ne", "ru", "sa", "to", "vi", "be", "do", "fu", "ga", "hi", "ju", "pe", "zo"]
_HAN = [chr(c) for c in range(0x4E00, 0x4E00 + 3000)]


def _english(rng, words=90):
    return " ".join("".join(rng.choices(_SYLLABLES, k=rng.randint(1, 4))) for _ in range(words)) + "."


def _chinese(rng, chars=220):
    return "".join(rng.choices(_HAN, k=chars)) + "。"


def _small_edit(rng, text):
    """An edit that keeps the shingle Jaccard well above 0.9: a word/char swapped, punctuation, an appended line."""
    chinese = "\u4e00" <= text[0] <= "\u9fff"
    edit = rng.choice(["swap", "punctuation", "append"])
    if edit == "swap" and chinese:
        at = rng.randrange(len(text) - 1)
        return text[:at] + rng.choice(_HAN) + text[at + 1 :]
    if edit == "swap":
        words = text.split(" ")
        words[rng.randrange(len(words))] = "swapped"
        return " ".join(words)
    if edit == "punctuation":
        return text.replace("。", "！") + "，" if chinese else text.replace(".", "!").replace(" ", ", ", 3).upper()
    return text + ("谢谢您的帮助。" if chinese else " Thanks for the help.")


def _heavy_edit(rng, text):
    """Half the words/characters replaced: Jaccard far below the threshold."""
    if "\u4e00" <= text[0] <= "\u9fff":
        return "".join(c if i % 2 else rng.choice(_HAN) for i, c in enumerate(text))
    return " ".join(w if i % 2 else "".join(rng.choices(_SYLLABLES, k=3)) for i, w in enumerate(text.split(" ")))


def _brute_force_pairs(texts, threshold):
    sets = [shingles(t) for t in texts]
    pairs = {}
    for i, j in itertools.combinations(range(len(texts)), 2):
        similarity = len(sets[i] & sets[j]) / len(sets[i] | sets[j])
        pairs[(i, j)] = similarity
    return pairs


def _cluster_pairs(clusters):
    return {tuple(sorted(p)) for cluster in clusters for p in itertools.combinations(cluster, 2)}


# --------------------------------------------------------------------------- texts


def test_normalise_folds_case_punctuation_full_width_and_spaces():
    assert normalise("Hello, World!") == normalise("hello   world") == "hello world"
    assert normalise("ＨＥＬＬＯ，ｗｏｒｌｄ！") == "hello world"
    assert normalise("Where is my order #123?!") == "where is my order 123"
    assert normalise("你好，世界。") == normalise("你好世界") == normalise("你好 世界") == "你好世界"
    assert normalise("我想用 API 接口（急）") == "我想用api接口急"
    assert normalise(" a\t\n b ") == "a b"


def test_dedup_text_uses_user_and_assistant_not_system():
    record = {"messages": [{"role": "system", "content": "You are helpful."},
                           {"role": "user", "content": "Where is my order?"},
                           {"role": "assistant", "content": "It ships today."}], "meta": {}}
    assert dedup_text(record) == "Where is my order?\nIt ships today."


def test_shingles_and_jaccard():
    assert shingles("abcdef") == {"abcde", "bcdef"}
    assert shingles("Hi!") == {"hi"}
    assert shingles("") == {""}
    assert shingles("退货退款流程", n=5) == {"退货退款流", "货退款流程"}
    assert jaccard("Hello world", "hello, WORLD") == 1.0
    assert jaccard("abcdefg", "abcdefh") == pytest.approx(2 / 4)
    assert jaccard("aaaaa", "bbbbb") == 0.0


# --------------------------------------------------------------------------- exact


def test_exact_duplicates_after_case_punctuation_and_full_width():
    texts = ["Where is my order?", "where is my ORDER", "ＷＨＥＲＥ　ＩＳ　ＭＹ　ＯＲＤＥＲ！", "A different question", "退货，怎么办？", "退货怎么办"]
    result = deduplicate(texts, near=False)
    assert result.kept == [0, 3, 4]
    assert result.removed == [Duplicate(1, 0, "exact", 1.0), Duplicate(2, 0, "exact", 1.0),
                              Duplicate(5, 4, "exact", 1.0)]
    assert result.clusters == [[0, 1, 2], [4, 5]]


def test_keep_first_versus_longest():
    texts = ["refund please", "Refund please!!!", "REFUND, please.", "other", "Other!!!"]
    first = deduplicate(texts, keep="first")
    assert first.kept == [0, 3]
    assert first.clusters == [[0, 1, 2], [3, 4]]
    longest = deduplicate(texts, keep="longest")
    assert longest.kept == [1, 4]
    assert longest.clusters == [[1, 0, 2], [4, 3]]
    tie = deduplicate(["Refund please!", "refund please?"], keep="longest")
    assert tie.kept == [0]

    rng = random.Random(5)
    base = _english(rng)
    longer = base + " Thanks for the help."
    near = deduplicate(["unrelated " + _english(rng), base, longer], keep="longest")
    assert near.kept == [0, 2]
    assert near.removed[0].index == 1 and near.removed[0].kind == "near"
    assert near.removed[0].similarity == pytest.approx(jaccard(base, longer))
    assert deduplicate(["unrelated", base, longer], keep="first").kept == [0, 1]


def test_edge_cases():
    assert deduplicate([]) == deduplicate([], exact=False)
    assert deduplicate([]).kept == []
    assert deduplicate(["only one"]).kept == [0]
    with pytest.raises(ValueError, match="keep"):
        deduplicate(["a"], keep="shortest")
    with pytest.raises(ValueError, match="threshold"):
        deduplicate(["a"], threshold=0)
    # a bucket far larger than the all-pairs limit still ends up as one cluster
    rng = random.Random(9)
    text = _english(rng)
    result = deduplicate([text] * 100 + [_english(rng)], exact=False, progress=True)
    assert result.kept == [0, 100]
    assert result.clusters == [list(range(100))]
    assert {d.kind for d in result.removed} == {"near"}


# --------------------------------------------------------------------------- MinHash and LSH


def test_lsh_bands_match_datasketch_search_and_lean_to_recall():
    # with datasketch's weights, datasketch.MinHashLSH's own choices (datasketch 2.0.0)
    assert lsh_bands(0.9, 128, 0.5, 0.5) == (5, 25)
    assert lsh_bands(0.8, 128, 0.5, 0.5) == (9, 13)
    bands, rows = lsh_bands(0.9, 128)
    assert bands * rows <= 128
    # the module's own candidate probability: a pair at Jaccard 0.95 is found > 99% of the time,
    # where datasketch's (5, 25) finds it about 80% of the time
    recall = _candidate_probability(np.array([0.95]), bands, rows)[0]
    assert recall > 0.99
    assert recall > _candidate_probability(np.array([0.95]), 5, 25)[0] + 0.1


def test_minhash_estimates_track_exact_jaccard():
    rng = random.Random(3)
    left, right = [], []
    for _ in range(150):
        words = _english(rng, 60).split(" ")
        other = list(words)
        for _ in range(rng.randint(0, 25)):
            other[rng.randrange(len(other))] = "x" + str(rng.randrange(10**6))
        left.append(" ".join(words))
        right.append(" ".join(other))
    signatures = minhash_signatures([normalise(t) for t in left + right])
    assert signatures.shape == (300, 128) and signatures.dtype == np.uint32
    estimate = (signatures[:150] == signatures[150:]).mean(axis=1)
    truth = np.array([jaccard(a, b) for a, b in zip(left, right)])
    assert abs((estimate - truth).mean()) < 0.01
    assert np.sqrt(((estimate - truth) ** 2).mean()) < 0.06  # theory: sqrt(J(1-J)/128) <= 0.044
    again = minhash_signatures([normalise(t) for t in left + right])
    assert (signatures == again).all()
    assert not (signatures == minhash_signatures([normalise(t) for t in left + right], seed=2)).all()


def test_signatures_do_not_depend_on_batching(monkeypatch):
    from seektune.data import dedup

    rng = random.Random(4)
    texts = [normalise(t) for t in [_english(rng, 400), "", "ab", _chinese(rng, 50), "abcde", _english(rng, 3)]]
    reference = minhash_signatures(texts, ngram=5, num_perm=16)
    monkeypatch.setattr(dedup, "_BLOCK_SHINGLES", 7)  # documents now span many blocks
    monkeypatch.setattr(dedup, "_BATCH_CHARS", 10)  # and batches hold one or two documents
    assert (minhash_signatures(texts, ngram=5, num_perm=16) == reference).all()
    # a text shorter than the n-gram is one shingle: equal texts agree, different ones do not
    short = minhash_signatures(["ab", "ab", "ba"], num_perm=16)
    assert (short[0] == short[1]).all() and not (short[0] == short[2]).all()


def test_near_pairs_equal_brute_force_on_clear_cases():
    rng = random.Random(11)
    texts = []
    for k in range(90):
        base = _english(rng, 150) if k % 2 else _chinese(rng, 400)
        texts.append(base)
        texts.append(_small_edit(rng, base) if k % 3 else _heavy_edit(rng, base))
        if k % 4 == 0:
            texts.append(_small_edit(rng, base))
    rng.shuffle(texts)
    assert len(texts) >= 200
    brute = _brute_force_pairs(texts, 0.9)
    assert all(s >= 0.95 or s <= 0.6 for s in brute.values()), "the generator must only make clear cases"
    expected = {pair for pair, similarity in brute.items() if similarity >= 0.9}
    assert len(expected) > 40

    found = near_duplicate_pairs(texts)
    assert {(i, j) for i, j, _ in found} == expected
    for i, j, similarity in found:
        assert similarity == pytest.approx(brute[(i, j)])

    result = deduplicate(texts, exact=False)
    assert _cluster_pairs(result.clusters) == _cluster_pairs(_components(len(texts), expected))
    assert all(d.similarity >= 0.9 for d in result.removed)


def _components(n, pairs):
    parent = list(range(n))

    def find(x):
        while parent[x] != x:
            x = parent[x]
        return x

    for i, j in pairs:
        parent[find(j)] = find(i)
    groups = {}
    for x in range(n):
        groups.setdefault(find(x), []).append(x)
    return [g for g in groups.values() if len(g) > 1]


def test_planted_near_duplicates_recall_and_precision():
    rng = random.Random(2024)
    texts, group = [], []
    for k in range(1000):
        texts.append(_english(rng, 80) if k % 3 else _chinese(rng, 180))
        group.append(k)
    for _ in range(300):
        source = rng.randrange(1000)
        texts.append(_small_edit(rng, texts[source]))
        group.append(source)
    order = list(range(len(texts)))
    rng.shuffle(order)
    texts = [texts[i] for i in order]
    group = [group[i] for i in order]

    planted = {}
    for index, g in enumerate(group):
        planted.setdefault(g, []).append(index)
    source_of = {g: min(c, key=lambda i: order[i]) for g, c in planted.items()}
    assert min(jaccard(texts[i], texts[source_of[g]]) for i, g in enumerate(group) if i != source_of[g]) >= 0.9
    truth = _cluster_pairs(c for c in planted.values() if len(c) > 1)

    result = deduplicate(texts)
    found = _cluster_pairs(result.clusters)
    recall = len(found & truth) / len(truth)
    precision = len(found & truth) / len(found)
    assert recall >= 0.95 and precision >= 0.95, (recall, precision)
    assert len(result.kept) == pytest.approx(len(planted), abs=len(planted) * 0.02)


# --------------------------------------------------------------------------- leakage


def test_cross_split_pairs_finds_planted_leaks_once_with_best_match():
    rng = random.Random(7)
    train = [_english(rng) if i % 2 else _chinese(rng) for i in range(40)]
    val = [_english(rng) for _ in range(10)]
    test = [_chinese(rng) for _ in range(10)]
    test[3] = train[6] + "谢谢您的帮助。"  # near leak from train (a Chinese row)
    test[5] = val[2].upper().replace(".", "!")  # exact leak from val
    test[8] = train[9].replace(".", "?")  # exact copy of train[9] ...
    val[4] = train[9] + " Thanks for the help."  # ... which val[4] near-copies: train wins for test[8]
    train[12] = train[11]  # a duplicate inside one split is not leakage
    pairs = cross_split_pairs({"test": test, "val": val, "train": train})
    assert [(p.split, p.index, p.other_split, p.other_index, p.kind) for p in pairs] == [
        ("val", 4, "train", 9, "near"),
        ("test", 3, "train", 6, "near"),
        ("test", 5, "val", 2, "exact"),
        ("test", 8, "train", 9, "exact"),
    ]
    assert pairs[1].similarity == pytest.approx(jaccard(test[3], train[6]))
    assert pairs[2] == LeakPair("test", 5, "val", 2, "exact", 1.0)


def test_cross_split_pairs_reports_nothing_on_clean_splits():
    rng = random.Random(8)
    splits = {"train": [_english(rng) for _ in range(60)] + [_chinese(rng) for _ in range(20)],
              "val": [_english(rng) for _ in range(10)], "test": [_chinese(rng) for _ in range(10)]}
    assert cross_split_pairs(splits) == []
    assert cross_split_pairs({"train": [], "test": []}) == []
