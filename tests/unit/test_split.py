from collections import Counter

from hypothesis import given, settings
from hypothesis import strategies as st

from seektune.data.split import split_by_ratio


def _records(n, categories=3):
    return [{"id": i, "meta": {"category": f"c{i % categories}"}} for i in range(n)]


def test_ratio_counts_and_determinism():
    out = split_by_ratio(_records(100), (0.8, 0.1, 0.1), seed=3)
    assert {k: len(v) for k, v in out.items()} == {"train": 80, "val": 10, "test": 10}
    again = split_by_ratio(_records(100), (0.8, 0.1, 0.1), seed=3)
    assert [r["id"] for r in out["test"]] == [r["id"] for r in again["test"]]
    other = split_by_ratio(_records(100), (0.8, 0.1, 0.1), seed=4)
    assert [r["id"] for r in out["test"]] != [r["id"] for r in other["test"]]


def test_stratified_split_spreads_each_category():
    out = split_by_ratio(_records(90), (0.6, 0.2, 0.2), seed=0, stratify_by="category")
    for split, expected in (("train", 18), ("val", 6), ("test", 6)):
        assert Counter(r["meta"]["category"] for r in out[split]) == {"c0": expected, "c1": expected, "c2": expected}


@settings(max_examples=60, deadline=None)
@given(n=st.integers(0, 200), seed=st.integers(0, 10), strata=st.integers(1, 40),
       ratios=st.sampled_from([(0.8, 0.1, 0.1), (0.7, 0.2, 0.1), (0.8, 0.05, 0.15), (1.0, 0.0, 0.0)]))
def test_every_row_lands_in_exactly_one_split(n, seed, strata, ratios):
    records = _records(n, strata)
    for stratify in (None, "category"):
        out = split_by_ratio(records, ratios, seed, stratify)
        ids = sorted(r["id"] for rows in out.values() for r in rows)
        assert ids == list(range(n))


from seektune.data.split import split_by_group  # noqa: E402


@settings(max_examples=80, deadline=None)
@given(sizes=st.lists(st.integers(1, 8), min_size=1, max_size=60), seed=st.integers(0, 100),
       ratios=st.sampled_from([(0.8, 0.1, 0.1), (0.7, 0.2, 0.1), (0.5, 0.25, 0.25)]))
def test_group_aware_split_never_puts_a_group_in_two_splits(sizes, seed, ratios):
    records = [{"id": f"{g}-{k}", "meta": {"conv": f"g{g}"}} for g, size in enumerate(sizes) for k in range(size)]
    out = split_by_group(records, "conv", ratios, seed)
    seen = {}
    for split, rows in out.items():
        for row in rows:
            assert seen.setdefault(row["meta"]["conv"], split) == split
    assert sorted(r["id"] for rows in out.values() for r in rows) == sorted(r["id"] for r in records)


def test_group_split_follows_ratios_on_many_small_groups():
    records = [{"meta": {"conv": i // 2}} for i in range(1000)]
    out = split_by_group(records, "conv", (0.7, 0.2, 0.1), seed=0)
    assert abs(len(out["train"]) - 700) <= 2 and abs(len(out["val"]) - 200) <= 2 and abs(len(out["test"]) - 100) <= 2
