"""The replay buffer of `seektune update`."""

from collections import Counter

from seektune.update import covering_sample


def _rows(groups: dict[str, int]) -> list[dict]:
    return [{"messages": [], "meta": {"fact_id": g, "n": i}} for g, n in groups.items() for i in range(n)]


def test_covering_sample_reaches_every_group_before_repeating_one():
    rows = _rows({"a": 10, "b": 1, "c": 3, "d": 6})
    picked = covering_sample(rows, 4, "fact_id", seed=0)
    assert sorted(r["meta"]["fact_id"] for r in picked) == ["a", "b", "c", "d"]
    seven = Counter(r["meta"]["fact_id"] for r in covering_sample(rows, 7, "fact_id", seed=0))
    assert seven["b"] == 1 and all(seven[g] == 2 for g in "acd")  # b has no second row to give
    everything = covering_sample(rows, len(rows), "fact_id", seed=0)
    assert sorted(map(id, everything)) == sorted(map(id, rows))  # each row at most once


def test_covering_sample_is_seeded_and_random_without_groups():
    rows = _rows({"a": 5, "b": 5})
    assert covering_sample(rows, 4, "fact_id", seed=3) == covering_sample(rows, 4, "fact_id", seed=3)
    flat = [{"messages": [], "meta": {"n": i}} for i in range(20)]
    picked = covering_sample(flat, 5, "fact_id", seed=1)
    assert len(picked) == 5 and len({r["meta"]["n"] for r in picked}) == 5
