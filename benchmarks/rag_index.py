"""Retrieval index: seektune.rag.index against brute-force NumPy cosine + rank-bm25, on 100,000 chunks.

    python benchmarks/rag_index.py                              # 100k chunks, 200 queries
    python benchmarks/rag_index.py --chunks 5000 --queries 40   # a quick look

Both sides index the same 100,000 generated store-policy chunks (half English, half Chinese: sentences
with products, regions, days, amounts and return codes, from small vocabularies below; seeded), 1,000
chunks per document, and answer the same queries (a sentence of a chunk with some words left out):

(a) seektune: ``Index.create`` then ``add_chunks`` once per document (the update path: SQLite rows,
    FTS5 BM25 over jieba/Latin tokens, usearch HNSW, saved after every document); queries are
    ``index.search(q, k=4)`` on the index reopened from disk (dense and lexical top-50, fused by
    reciprocal rank).
(b) baseline: the plain in-memory way - a NumPy matrix of the vectors (cosine = one matrix-vector
    product) and ``rank_bm25.BM25Okapi`` over the same tokens (``seektune.rag.index.lexical_tokens``,
    k1 1.2 and b 0.75 as FTS5's bm25()), each side's top 50 fused by the same reciprocal rank fusion
    as the index (seektune.rag.index.RRF_K and the embedder's fusion_weight), top 4.

Embeddings: both sides get the same vectors from a cheap deterministic embedder defined here (signed
hashing of words and character bigrams into 384 dims, weighted by inverse document frequency,
L2-normalised), passed to ``add_chunks(..., vectors=...)``. An encoder such as MiniLM would cost the
same on both sides and take far too long for 100k chunks on a CPU; this benchmark measures the index
(storage, lexical and vector search, fusion), not the encoder.

Build time: seektune = create + every ``add_chunks`` + close; baseline = tokenising the chunks +
``BM25Okapi`` + the matrix. Query latency: per query, wall time, after one warm-up query each; the
query's embedding is computed inside the timed call on both sides.

Printed: build seconds, p50/p95 query latency of each side, and how often the two agree (same
top-1, overlap of the top 4, and how often each finds the chunk the query came from). The last line
is one JSON object; the headline ``ratio`` is baseline p50 query latency / seektune p50 query
latency (higher is better; ``ratio_is`` says so), ``build_ratio`` is baseline build s / seektune build s.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import re
import sys
import tempfile
import time
import zlib
from importlib.metadata import version
from pathlib import Path

import numpy as np

from seektune.rag.index import RRF_K, Index, lexical_tokens
from seektune.text import CJK_IDEOGRAPHS

CHUNKS_PER_DOCUMENT = 1_000
K = 4
CANDIDATES = 50

# --------------------------------------------------------------------------- chunks

_EN_PRODUCTS = ["wireless earbuds", "air purifier", "washing machine", "fridge", "microwave", "laptop", "tablet",
                "rice cooker", "vacuum cleaner", "smart watch", "monitor", "printer", "router", "robot vacuum",
                "electric toothbrush", "humidifier", "projector", "camera", "speaker", "office chair", "standing desk",
                "coffee grinder", "electric kettle", "hair dryer", "keyboard", "e-reader", "blender", "dishwasher",
                "space heater", "desk lamp"]
_EN_CATEGORIES = ["home appliance", "electronics", "clothing", "grocery", "baby", "furniture", "book", "beauty",
                  "sports", "kitchen", "garden", "toy"]
_EN_REGIONS = ["Bavaria", "Ontario", "Queensland", "Texas", "Scotland", "Catalonia", "Lombardy", "Quebec",
               "Victoria", "Oregon", "Wales", "Brittany", "Flanders", "Tyrol", "Ohio", "Kerala", "Alberta", "Munster"]
_EN_CITIES = ["Berlin", "Toronto", "Brisbane", "Austin", "Glasgow", "Barcelona", "Milan", "Montreal", "Melbourne",
              "Portland", "Cardiff", "Rennes", "Ghent", "Innsbruck", "Columbus", "Kochi", "Calgary", "Cork"]
_EN_TIERS = ["Basic", "Silver", "Gold", "Platinum", "Diamond"]
_EN_PAYMENTS = ["credit card", "debit card", "bank transfer", "PayPal", "gift card", "cash on delivery"]
_EN_RETAILERS = ["another online store", "a local shop", "the brand's own site", "a partner marketplace"]
_EN_TEMPLATES = [
    "Items in the {category} category can be returned within {days} days of delivery if they are unused and in "
    "the original packaging.",
    "Orders shipped to {region} arrive in {d1} to {d2} business days; express delivery costs {amount}.",
    "The {product} carries a {months}-month warranty that covers defects in materials and workmanship.",
    "{tier} members get {pct}% off {category} items and free shipping on orders over {amount}.",
    "Refunds for orders paid by {payment} are issued within {days} business days to the original payment method.",
    "Use return code {code} on the label when you send back a {product}.",
    "A restocking fee of {pct}% applies to opened {product} returns after {days} days.",
    "Price match requests for the {product} must be made within {days} days and include a link to {retailer}.",
    "Gift cards worth {amount} or more cannot be used to buy {category} items in {region}.",
    "Store pickup at the {city} branch is available from {hour}:00 to {hour2}:00 on weekdays.",
    "Repairs of the {product} outside the warranty cost {amount} plus parts and take about {days} days.",
    "Policy {policy} was last updated on {date} and replaces the rules for {category} items in {region}.",
    "Customers in {region} may cancel an order within {hours} hours at no charge.",
    "Installation of a {product} is free for {tier} members within {km} km of the {city} store.",
    "We keep payment records for {years} years as the law in {region} requires.",
    "Damaged {product} deliveries must be reported within {hours} hours with a photo of the box.",
]
_ZH_PRODUCTS = ["蓝牙耳机", "空气净化器", "洗衣机", "电冰箱", "微波炉", "笔记本电脑", "平板电脑", "电饭煲", "吸尘器",
                "智能手表", "显示器", "打印机", "路由器", "扫地机器人", "电动牙刷", "加湿器", "投影仪", "相机", "音箱",
                "办公椅", "升降桌", "咖啡机", "电热水壶", "吹风机", "机械键盘", "电子书阅读器", "榨汁机", "洗碗机",
                "取暖器", "台灯"]
_ZH_CATEGORIES = ["家电", "数码", "服装", "食品", "母婴", "家具", "图书", "美妆", "运动", "厨具", "园艺", "玩具"]
_ZH_REGIONS = ["广东省", "浙江省", "江苏省", "四川省", "湖北省", "山东省", "河南省", "福建省", "湖南省", "安徽省",
               "河北省", "陕西省", "云南省", "江西省", "辽宁省", "吉林省", "山西省", "贵州省"]
_ZH_CITIES = ["北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "西安", "南京", "重庆", "苏州", "天津", "长沙",
              "郑州", "青岛", "厦门", "合肥", "昆明"]
_ZH_TIERS = ["普通", "银卡", "金卡", "铂金", "钻石"]
_ZH_PAYMENTS = ["支付宝", "微信支付", "银行卡", "信用卡", "礼品卡", "货到付款"]
_ZH_RETAILERS = ["其他网店", "本地商店", "品牌官网", "合作商城"]
_ZH_TEMPLATES = [
    "{category}类商品在签收后{days}天内可以退货，须保持未使用且包装完好。",
    "寄往{region}的订单预计{d1}至{d2}个工作日送达，加急配送费用为{amount}元。",
    "{product}享受{months}个月保修，保修范围包括材料和工艺缺陷。",
    "{tier}会员购买{category}类商品可享受{pct}%的折扣，订单满{amount}元包邮。",
    "使用{payment}支付的订单，退款将在{days}个工作日内原路退回。",
    "寄回{product}时请在快递单上填写退货码{code}。",
    "已拆封的{product}超过{days}天退货，需收取{pct}%的重新上架费。",
    "{product}的价格保护申请须在{days}天内提交，并附上{retailer}的商品链接。",
    "面值{amount}元及以上的礼品卡不能在{region}购买{category}类商品。",
    "{city}门店自提时间为工作日{hour}点到{hour2}点。",
    "保修期外维修{product}收费{amount}元另加配件费，大约需要{days}天。",
    "政策{policy}于{date}更新，取代{region}{category}类商品的原有规定。",
    "{region}的顾客可以在下单后{hours}小时内免费取消订单。",
    "{tier}会员在{city}门店{km}公里范围内可以免费安装{product}。",
    "根据{region}的法律要求，我们保存付款记录{years}年。",
    "{product}送货时如有破损，请在{hours}小时内拍照反馈。",
]
_CODES = ["RTN", "EXC", "WAR", "SHP", "PAY", "GFT", "REP", "INS"]
_LANGUAGES = {
    "en": (_EN_TEMPLATES, _EN_PRODUCTS, _EN_CATEGORIES, _EN_REGIONS, _EN_CITIES, _EN_TIERS, _EN_PAYMENTS,
           _EN_RETAILERS),
    "zh": (_ZH_TEMPLATES, _ZH_PRODUCTS, _ZH_CATEGORIES, _ZH_REGIONS, _ZH_CITIES, _ZH_TIERS, _ZH_PAYMENTS,
           _ZH_RETAILERS),
}


def policy_sentences(rng: random.Random, language: str) -> list[str]:
    """One chunk's sentences: 5-7 policy templates filled from the vocabularies (one product, region, ... each)."""
    templates, products, categories, regions, cities, tiers, payments, retailers = _LANGUAGES[language]
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    d1 = rng.randint(1, 6)
    hour = rng.randint(7, 11)
    slots = {
        "product": rng.choice(products), "category": rng.choice(categories), "region": rng.choice(regions),
        "city": rng.choice(cities), "tier": rng.choice(tiers), "payment": rng.choice(payments),
        "retailer": rng.choice(retailers), "days": rng.randint(3, 90), "d1": d1, "d2": d1 + rng.randint(1, 9),
        "months": rng.choice([6, 12, 18, 24, 36]), "pct": rng.randint(3, 40), "hours": rng.choice([2, 6, 12, 24, 48]),
        "amount": f"{rng.randint(5, 2000)}" if language == "zh" else f"${rng.randint(5, 2000)}",
        "code": f"{rng.choice(_CODES)}-{rng.randint(1000, 9999)}", "policy": f"P{rng.randint(10_000, 99_999)}",
        "date": f"{2020 + rng.randint(0, 6)}年{month}月{day}日" if language == "zh" else f"{2020 + rng.randint(0, 6)}-"
                f"{month:02d}-{day:02d}",
        "hour": hour, "hour2": hour + rng.randint(6, 11), "km": rng.choice([5, 10, 20, 30, 50]),
        "years": rng.choice([3, 5, 7, 10]),
    }
    return [template.format(**slots) for template in rng.sample(templates, rng.randint(5, 7))]


def generate_chunks(n: int, seed: int = 0) -> tuple[list[tuple[str, str, list[str]]], list[list[str]]]:
    """``n`` chunks in documents of 1,000, alternately English and Chinese: ``[(name, language, texts)]`` and,
    per chunk in the same order, its sentences (the queries are made from them)."""
    rng = random.Random(seed)
    documents, sentences = [], []
    for number, start in enumerate(range(0, n, CHUNKS_PER_DOCUMENT)):
        language = "en" if number % 2 == 0 else "zh"
        texts = []
        for _ in range(min(CHUNKS_PER_DOCUMENT, n - start)):
            chunk = policy_sentences(rng, language)
            sentences.append(chunk)
            texts.append((" " if language == "en" else "").join(chunk))
        documents.append((f"policies-{number:03d}-{language}.md", language, texts))
    return documents, sentences


# a sentence with a return code, policy number or amount: most other sentences recur word for word in many of
# 100,000 chunks ("Customers in Ohio may cancel an order within 24 hours ..."), so no index could tell which
# chunk such a query came from
_DISTINCTIVE = re.compile(r"[A-Z]{3}-\d{4}|P\d{5}|\$\d+|\d+元")


def make_queries(sentences: list[list[str]], count: int, seed: int = 1) -> list[tuple[str, int]]:
    """``count`` queries, alternately English and Chinese: one sentence of a random chunk (one with a code,
    policy number or amount when it has one) with some of it left out (a fifth of the words; two characters
    and the punctuation in Chinese), and the chunk it came from."""
    rng = random.Random(seed)
    english = [i for i, chunk in enumerate(sentences) if not _CJK.search(chunk[0])]
    chinese = [i for i, chunk in enumerate(sentences) if _CJK.search(chunk[0])]
    queries = []
    for number in range(count):
        pool = english if (number % 2 == 0 and english) or not chinese else chinese
        source = rng.choice(pool)
        chunk = sentences[source]
        sentence = rng.choice([s for s in chunk if _DISTINCTIVE.search(s)] or chunk)
        if pool is english:
            words = sentence.rstrip(".").split()
            drop = set(rng.sample(range(len(words)), len(words) // 5))
            query = " ".join(word for i, word in enumerate(words) if i not in drop)
        else:
            text = re.sub(r"[，。、；]", "", sentence)
            at = rng.randrange(len(text) - 2)
            query = text[:at] + text[at + 2:]
        queries.append((query, source))
    return queries


# --------------------------------------------------------------------------- the shared embedder

_CJK = re.compile(f"[{CJK_IDEOGRAPHS}]")
_FEATURES = re.compile(f"[{CJK_IDEOGRAPHS}]+|[^\\W_]+")


class HashedEmbedder:
    """Signed feature hashing of lower-cased words, word bigrams, CJK characters and CJK character bigrams into
    384 dims, each feature weighted by its inverse document frequency in the corpus (``fit``), L2-normalised:
    deterministic, no model, microseconds a chunk. The weighting lets codes and amounts, not the words every
    policy shares, decide which chunks are near, as a sentence encoder would. Both sides use it."""

    name = "hashed-tfidf-384"
    dim = 384

    def __init__(self) -> None:
        self._slots: dict[str, tuple[int, float]] = {}
        self._idf: dict[str, float] = {}
        self._unseen = 1.0

    @staticmethod
    def _features(text: str) -> list[str]:
        features: list[str] = []
        previous = None
        for match in _FEATURES.finditer(text.lower()):
            run = match.group(0)
            if _CJK.match(run):
                features += list(run) + [run[i: i + 2] for i in range(len(run) - 1)]
                previous = None
            else:
                features.append(run)
                if previous is not None:
                    features.append(previous + " " + run)
                previous = run
        return features

    def fit(self, texts: list[str]) -> "HashedEmbedder":
        counts: dict[str, int] = {}
        for text in texts:
            for feature in set(self._features(text)):
                counts[feature] = counts.get(feature, 0) + 1
        n = len(texts)
        self._idf = {feature: float(np.log((1 + n) / (1 + df)) + 1) for feature, df in counts.items()}
        self._unseen = float(np.log(1 + n) + 1)
        return self

    def _slot(self, feature: str) -> tuple[int, float]:
        slot = self._slots.get(feature)
        if slot is None:
            code = zlib.crc32(feature.encode("utf-8"))
            sign = 1.0 if code & (1 << 31) else -1.0
            slot = self._slots[feature] = (code % self.dim, sign * self._idf.get(feature, self._unseen))
        return slot

    def encode(self, texts: list[str]) -> np.ndarray:
        vectors = np.zeros((len(texts), self.dim), dtype=np.float32)
        for row, text in enumerate(texts):
            for feature in self._features(text):
                column, weight = self._slot(feature)
                vectors[row, column] += weight
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        return vectors / np.maximum(norms, 1e-12)


# --------------------------------------------------------------------------- the two sides


def build_seektune(path: Path, documents, vectors: np.ndarray, embedder: HashedEmbedder) -> float:
    start = time.perf_counter()
    index = Index.create(path, embedder=embedder)
    offset = 0
    for number, (name, _, texts) in enumerate(documents):
        index.add_chunks(name, texts, vectors=vectors[offset: offset + len(texts)])
        offset += len(texts)
        if number % 10 == 9:
            _progress(f"  seektune: {offset} chunks indexed, {time.perf_counter() - start:.1f} s")
    index.close()
    return time.perf_counter() - start


class Baseline:
    """Brute-force cosine over a NumPy matrix + rank-bm25's BM25Okapi, fused by reciprocal rank."""

    def __init__(self, texts: list[str], ids: list[str], vectors: np.ndarray, embedder: HashedEmbedder):
        from rank_bm25 import BM25Okapi

        self.texts, self.ids, self.embedder = texts, ids, embedder
        self.bm25 = BM25Okapi([lexical_tokens(text) for text in texts], k1=1.2, b=0.75)
        self.matrix = np.ascontiguousarray(vectors, dtype=np.float32)

    @staticmethod
    def _top(scores: np.ndarray, count: int) -> np.ndarray:
        """Indices of the ``count`` highest scores, best first (ties: lower index first)."""
        count = min(count, len(scores))
        part = np.argpartition(-scores, count - 1)[:count]
        return part[np.lexsort((part, -scores[part]))]

    def search(self, query: str, k: int = K) -> list[str]:
        dense = self._top(self.matrix @ self.embedder.encode([query])[0], CANDIDATES)
        tokens = list(dict.fromkeys(lexical_tokens(query)))  # FTS5's "a OR b" also counts each term once
        lexical = []
        if tokens:
            scores = self.bm25.get_scores(tokens)
            lexical = [i for i in self._top(scores, CANDIDATES) if scores[i] > 0]  # FTS5 returns matches only
        fused: dict[int, float] = {}
        dense_weight = getattr(self.embedder, "fusion_weight", 1.0)  # the same fusion as the index's
        for weight, ranking in ((dense_weight, dense), (1.0, lexical)):
            for rank, i in enumerate(ranking):
                fused[int(i)] = fused.get(int(i), 0.0) + weight / (RRF_K + rank + 1)
        best = sorted(fused, key=lambda i: (-fused[i], i))[:k]
        return [self.ids[i] for i in best]


def _progress(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _latencies(search, queries: list[tuple[str, int]]) -> tuple[list[list[str]], np.ndarray]:
    search(queries[0][0])  # warm-up, not timed
    results, seconds = [], []
    for number, (query, _) in enumerate(queries):
        start = time.perf_counter()
        results.append(search(query))
        seconds.append(time.perf_counter() - start)
        if number % 50 == 49:
            _progress(f"    {number + 1}/{len(queries)} queries, mean {1000 * np.mean(seconds):.1f} ms")
    return results, np.array(seconds) * 1000


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file()) / 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chunks", type=int, default=100_000, help="chunks to generate (default 100000)")
    parser.add_argument("--queries", type=int, default=200, help="queries, half English (default 200)")
    parser.add_argument("--baseline-queries", type=int, default=None,
                        help="answer only the first N queries on the baseline side (default: all)")
    args = parser.parse_args()

    start = time.perf_counter()
    documents, sentences = generate_chunks(args.chunks)
    texts = [text for _, _, chunk_texts in documents for text in chunk_texts]
    ids = [f"{name}#c{k + 1}" for name, _, chunk_texts in documents for k in range(len(chunk_texts))]
    queries = make_queries(sentences, args.queries)
    _progress(f"generated {len(texts)} chunks in {len(documents)} documents, {len(queries)} queries "
              f"({time.perf_counter() - start:.1f} s)")
    embedder = HashedEmbedder()
    start = time.perf_counter()
    vectors = embedder.fit(texts).encode(texts)
    embed_s = time.perf_counter() - start
    _progress(f"embedded them with {embedder.name} in {embed_s:.1f} s (shared, not timed for either side)")
    lexical_tokens("预热")  # jieba loads its dictionary once, outside both timings

    english = sum(1 for _, language, chunk_texts in documents if language == "en" for _ in chunk_texts)
    print(f"{len(texts)} chunks ({english} English, {len(texts) - english} Chinese) in {len(documents)} documents, "
          f"mean {np.mean([len(t) for t in texts]):.0f} chars; {len(queries)} queries")

    with tempfile.TemporaryDirectory(prefix="rag-index-bench-") as tmp:
        path = Path(tmp) / "index"
        _progress("building the seektune index ...")
        ours_build_s = build_seektune(path, documents, vectors, embedder)
        index_mb = _size_mb(path)
        start = time.perf_counter()
        index = Index.open(path, embedder=embedder)
        index.search(queries[0][0], k=K)  # loads the HNSW file
        open_s = time.perf_counter() - start
        _progress("seektune queries ...")
        ours_hits, ours_ms = _latencies(lambda q: [hit.chunk_id for hit in index.search(q, k=K)], queries)
        index.close()

    _progress("building the baseline ...")
    start = time.perf_counter()
    baseline = Baseline(texts, ids, vectors, embedder)
    theirs_build_s = time.perf_counter() - start
    baseline_queries = queries[: args.baseline_queries] if args.baseline_queries else queries
    _progress(f"baseline queries ({len(baseline_queries)}) ...")
    theirs_hits, theirs_ms = _latencies(baseline.search, baseline_queries)

    both = len(baseline_queries)
    top1 = np.mean([a[:1] == b[:1] for a, b in zip(ours_hits, theirs_hits)])
    overlap = np.mean([len(set(a) & set(b)) / K for a, b in zip(ours_hits, theirs_hits)])
    ours_found = np.mean([ids[source] in hits for hits, (_, source) in zip(ours_hits, queries)])
    theirs_found = np.mean([ids[source] in hits for hits, (_, source) in zip(theirs_hits, queries)])
    ours_p50, ours_p95 = np.percentile(ours_ms, [50, 95])
    theirs_p50, theirs_p95 = np.percentile(theirs_ms, [50, 95])

    print(f"{'':28}{'seektune':>14}{'baseline':>14}")
    print(f"{'build (s)':28}{ours_build_s:14.1f}{theirs_build_s:14.1f}")
    print(f"{'query p50 (ms)':28}{ours_p50:14.2f}{theirs_p50:14.2f}")
    print(f"{'query p95 (ms)':28}{ours_p95:14.2f}{theirs_p95:14.2f}")
    print(f"{'queries timed':28}{len(queries):14d}{both:14d}")
    print(f"{'source chunk in top 4':28}{ours_found:14.3f}{theirs_found:14.3f}")
    print(f"seektune index on disk {index_mb:.1f} MB, reopened + first query in {open_s:.2f} s")
    print(f"agreement over {both} queries: same top-1 {top1:.3f}, overlap of the top {K} {overlap:.3f}")
    print(json.dumps({
        "ratio": round(theirs_p50 / ours_p50, 2),
        "ratio_is": "baseline p50 query latency / seektune p50 query latency (higher is better)",
        "ratio_p95": round(theirs_p95 / ours_p95, 2),
        "build_ratio": round(theirs_build_s / ours_build_s, 3),
        "n_chunks": len(texts),
        "documents": len(documents),
        "queries": len(queries),
        "baseline_queries": both,
        "seektune_build_s": round(ours_build_s, 2),
        "baseline_build_s": round(theirs_build_s, 2),
        "seektune_p50_ms": round(float(ours_p50), 3),
        "seektune_p95_ms": round(float(ours_p95), 3),
        "baseline_p50_ms": round(float(theirs_p50), 3),
        "baseline_p95_ms": round(float(theirs_p95), 3),
        "seektune_open_s": round(open_s, 3),
        "seektune_index_mb": round(index_mb, 1),
        "top1_agreement": round(float(top1), 4),
        "overlap_at_4": round(float(overlap), 4),
        "seektune_source_at_4": round(float(ours_found), 4),
        "baseline_source_at_4": round(float(theirs_found), 4),
        "embedder": embedder.name,
        "embed_s": round(embed_s, 2),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "usearch": version("usearch"),
        "rank_bm25": version("rank-bm25"),
    }))


if __name__ == "__main__":
    main()
