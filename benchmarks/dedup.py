"""Near-duplicate detection: seektune.data.dedup against a plain datasketch loop.

    python benchmarks/dedup.py              # 100k rows (the datasketch side takes minutes)
    python benchmarks/dedup.py --rows 5000  # a quick look

Both sides get the same synthetic support-ticket rows (English and Chinese, ~10% planted
near-duplicates: a word or character changed, punctuation or case changed, a short
sentence appended, a typo), the same 5-character shingles of the normalised text, 128
permutations and threshold 0.9:

(a) datasketch: per row, ``MinHash.update()`` once per shingle, then ``MinHashLSH.query``;
    a row with any candidate is a duplicate, otherwise it is inserted and kept. The
    permutations are built once and shared, so the loop is not charged for rebuilding them.
(b) seektune: ``deduplicate(rows, exact=False, near=True)`` (candidates verified exactly).

Printed: rows/s and wall time of each, how many rows each keeps, the Jaccard overlap of
the kept index sets, and the share of planted near-copies each removed. The last line is one JSON object; ``ratio`` is seektune rows/s
divided by datasketch rows/s (higher is better).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import time

import numpy as np

from seektune.data.dedup import deduplicate, shingles

THRESHOLD = 0.9
NUM_PERM = 128
NGRAM = 5
PLANTED_SHARE = 0.1

# --------------------------------------------------------------------------- rows

_EN_NAMES = ["Alice", "Bob", "Carlos", "Dana", "Emeka", "Fatima", "Grace", "Hiro", "Ivan", "Jia", "Kofi", "Lena",
             "Marta", "Nikhil", "Olga", "Priya", "Quentin", "Rosa", "Sven", "Tariq", "Uma", "Victor", "Wen", "Yusuf"]
_EN_PRODUCTS = ["wireless earbuds", "standing desk", "coffee grinder", "yoga mat", "4K monitor", "router",
                "air purifier", "phone case", "backpack", "smart watch", "blender", "desk lamp", "e-reader",
                "mechanical keyboard", "baby stroller", "electric kettle", "hiking boots", "office chair"]
_EN_CITIES = ["Berlin", "Lagos", "Austin", "Osaka", "Lyon", "Pune", "Leeds", "Porto", "Quito", "Perth", "Cork"]
_EN_GREETINGS = ["Hi,", "Hello,", "Hey team,", "Good morning,", "Dear support,", "Hi there,", "Good evening,"]
_EN_ISSUES = [
    "I ordered a {product} on {date} (order #{order}) and it still has not arrived.",
    "My {product} from order #{order} stopped working after {days} days.",
    "I was charged {amount} twice for order #{order}.",
    "The {product} I received is not the colour I picked on {date}.",
    "I cannot log in to my account since the update on {date}.",
    "The tracking page for order #{order} has said 'in transit' for {days} days.",
    "I returned the {product} on {date} but the refund of {amount} is not on my card yet.",
    "The box for order #{order} arrived damaged and the {product} inside is scratched.",
    "Your app keeps asking me to reset my password, I did it {days} times already.",
    "I want to change the delivery address of order #{order} to my office in {city}.",
    "The discount code for {amount} off did not apply to my {product}.",
    "I got an email saying order #{order} was cancelled, but I never cancelled it.",
    "The {product} manual is missing and I cannot find it on your website.",
    "My subscription renewed on {date} even though I turned auto-renew off.",
    "Two items are missing from order #{order}, only the {product} was in the box.",
    "The courier left my {product} at the wrong door in {city}.",
    "I was promised a call back about order #{order} on {date} but nobody called.",
    "The warranty page says my {product} is not registered, but I registered it on {date}.",
]
_EN_DETAILS = [
    "I have attached a photo of the label.", "This is the {nth} time I am writing about this.",
    "I need it before my trip to {city} on {date}.", "My account email is {name_lower}{digits}@example.com.",
    "I paid with a credit card ending in {digits}.", "The seller said to contact you directly.",
    "I already tried restarting it and charging it overnight.", "It was a gift for my {relative}.",
    "I live in {city} and the nearest pickup point is closed.", "Your chat bot could not help me.",
    "The invoice number is INV-{order}.", "I have been a customer for {days} months.",
]
_EN_ASKS = ["Can you help?", "Please refund me.", "What should I do now?", "When will this be fixed?",
            "Could you send a replacement?", "Please call me back.", "Can I get an update today?"]
_EN_OPENERS = ["Hi {name}, thanks for reaching out.", "Hello {name}, sorry to hear about this.",
               "Thank you for contacting us, {name}.", "Hi {name}, I am sorry for the trouble.",
               "Dear {name}, thank you for your patience."]
_EN_ACTIONS = [
    "I have opened a ticket ({ticket}) with the courier for order #{order}.",
    "I have issued a refund of {amount}; it takes 3 to 5 business days to show.",
    "A replacement {product} will ship from our {city} warehouse within {days} days.",
    "I reset your account, so you can now log in with a new password.",
    "I updated the address on order #{order} to {city}.",
    "I removed the duplicate charge of {amount} from your card.",
    "I registered your {product} for warranty under case {ticket}.",
    "I have sent the {product} manual to your email address.",
    "I turned off auto-renew and refunded the last payment of {amount}.",
    "Our team in {city} will call you before {date}.",
]
_EN_CLOSINGS = ["Is there anything else I can help with?", "Have a great day!", "Best regards, {agent}.",
                "Let me know if the problem comes back.", "Thanks again for your patience. {agent}"]
_EN_RELATIVES = ["mother", "son", "sister", "colleague", "partner", "grandfather"]
_EN_SWAPS = {"order": "purchase", "refund": "reimbursement", "arrived": "come", "help": "assist",
             "still": "yet", "card": "account", "received": "got", "damaged": "broken", "call": "phone"}
_EN_APPENDS = ["Thanks.", "Any update?", "Thank you!", "Regards.", "Cheers."]

_ZH_PRODUCTS = ["蓝牙耳机", "升降桌", "咖啡机", "瑜伽垫", "显示器", "路由器", "空气净化器", "手机壳", "双肩包",
                "智能手表", "电热水壶", "台灯", "电子书阅读器", "机械键盘", "婴儿推车", "办公椅"]
_ZH_CITIES = ["北京", "上海", "广州", "深圳", "杭州", "成都", "武汉", "西安", "南京", "重庆", "苏州"]
_ZH_ISSUES = [
    "我在{date}买的{product}（订单号{order}）到现在还没收到。", "订单{order}的{product}用了{days}天就坏了。",
    "订单{order}被重复扣款{amount}元。", "收到的{product}颜色和我{date}下单时选的不一样。",
    "从{date}更新以后我就登录不了账号了。", "订单{order}的物流信息已经{days}天没有更新了。",
    "我{date}退回了{product}，但是{amount}元退款还没到账。", "订单{order}的包裹破损了，里面的{product}有划痕。",
    "我想把订单{order}的收货地址改到{city}。", "{amount}元的优惠券在买{product}时用不了。",
    "我没有取消订单{order}，却收到了取消通知。", "快递员把我的{product}放错了门，我住在{city}。",
]
_ZH_DETAILS = ["我已经上传了快递单的照片。", "这是我第{days}次联系你们了。", "我{date}要去{city}出差，急用。",
               "我用的是尾号{digits}的信用卡付款。", "卖家让我直接联系你们。", "发票号是INV-{order}。",
               "这是送给家人的礼物。", "在线客服机器人解决不了我的问题。"]
_ZH_ASKS = ["请帮我处理一下。", "请给我退款。", "我现在该怎么办？", "什么时候能解决？", "能给我换一个新的吗？",
            "请尽快回电话。"]
_ZH_OPENERS = ["您好，感谢您的联系。", "您好，很抱歉给您带来不便。", "亲，非常抱歉让您久等了。"]
_ZH_ACTIONS = ["我已经为订单{order}向快递公司提交了工单{ticket}。", "已为您退款{amount}元，预计3到5个工作日到账。",
               "新的{product}将在{days}天内从{city}仓库发出。", "已将订单{order}的收货地址改为{city}。",
               "重复扣除的{amount}元已经退回您的卡上。", "{city}的同事会在{date}之前给您回电。"]
_ZH_CLOSINGS = ["请问还有其他可以帮您的吗？", "祝您生活愉快！", "如有问题请随时联系我们。"]
_ZH_SWAPS = {"订单": "单号", "退款": "退钱", "快递": "物流", "收到": "拿到", "联系": "找"}
_ZH_APPENDS = ["谢谢。", "麻烦了！", "辛苦了。"]


def _slots(rng: random.Random, products: list[str], cities: list[str], chinese: bool) -> dict[str, str]:
    name = rng.choice(_EN_NAMES)
    month, day = rng.randint(1, 12), rng.randint(1, 28)
    return {
        "product": rng.choice(products), "city": rng.choice(cities), "name": name, "name_lower": name.lower(),
        "order": str(rng.randint(1_000_000, 9_999_999)), "ticket": f"T-{rng.randint(10_000, 99_999)}",
        "amount": f"{rng.randint(5, 900)}" if chinese else f"${rng.randint(5, 900)}.{rng.randint(0, 99):02d}",
        "date": f"{month}月{day}日" if chinese else f"{month}/{day}", "days": str(rng.randint(2, 40)),
        "digits": str(rng.randint(1000, 9999)), "nth": rng.choice(["second", "third", "fourth", "fifth"]),
        "relative": rng.choice(_EN_RELATIVES), "agent": rng.choice(_EN_NAMES),
    }


def _pick(rng: random.Random, pool: list[str], k: int, slots: dict[str, str]) -> list[str]:
    return [s.format(**slots) for s in rng.sample(pool, k)]


def english_ticket(rng: random.Random) -> str:
    slots = _slots(rng, _EN_PRODUCTS, _EN_CITIES, chinese=False)
    user = [rng.choice(_EN_GREETINGS)] + _pick(rng, _EN_ISSUES, rng.randint(1, 2), slots)
    user += _pick(rng, _EN_DETAILS, rng.randint(1, 3), slots) + [rng.choice(_EN_ASKS)]
    agent = _pick(rng, _EN_OPENERS, 1, slots) + _pick(rng, _EN_ACTIONS, rng.randint(1, 3), slots)
    agent += _pick(rng, _EN_CLOSINGS, 1, slots)
    return " ".join(user) + "\n" + " ".join(agent)


def chinese_ticket(rng: random.Random) -> str:
    slots = _slots(rng, _ZH_PRODUCTS, _ZH_CITIES, chinese=True)
    user = _pick(rng, _ZH_ISSUES, rng.randint(1, 2), slots) + _pick(rng, _ZH_DETAILS, rng.randint(1, 2), slots)
    agent = _pick(rng, _ZH_OPENERS, 1, slots) + _pick(rng, _ZH_ACTIONS, rng.randint(2, 3), slots)
    agent += _pick(rng, _ZH_CLOSINGS, 1, slots)
    return "".join(user + [rng.choice(_ZH_ASKS)]) + "\n" + "".join(agent)


def near_copy(rng: random.Random, text: str) -> str:
    """A small edit of ``text``: a word/phrase swapped, punctuation or case changed, a typo, an appended line."""
    chinese = any("\u4e00" <= c <= "\u9fff" for c in text)
    swaps, appends = (_ZH_SWAPS, _ZH_APPENDS) if chinese else (_EN_SWAPS, _EN_APPENDS)
    edit = rng.choice(["swap", "punctuation", "case", "typo", "append"])
    present = [word for word in swaps if word in text]
    if edit == "swap" and present:
        word = rng.choice(present)
        return text.replace(word, swaps[word], 1)
    if edit == "punctuation":
        return text.replace("。" if chinese else ".", "！" if chinese else "!", 2).replace("，" if chinese else ",", "")
    if edit == "case" and not chinese:
        return text.upper() if rng.random() < 0.3 else text.lower()
    if edit == "typo":
        at = rng.randrange(1, len(text) - 2)
        return text[:at] + text[at + 1] + text[at] + text[at + 2 :]
    return text + (" " if not chinese else "") + rng.choice(appends)


def ticket_rows(n: int, seed: int = 0, chinese_share: float = 0.25) -> tuple[list[str], list[int | None]]:
    """``n`` rows and, for each, the row it is a planted near-copy of (``None`` for an original)."""
    rng = random.Random(seed)
    rows: list[str] = []
    source: list[int | None] = []
    for index in range(n):
        if index > 10 and rng.random() < PLANTED_SHARE:
            original = rng.randrange(index)
            while source[original] is not None:
                original = source[original]
            rows.append(near_copy(rng, rows[original]))
            source.append(original)
        else:
            rows.append(chinese_ticket(rng) if rng.random() < chinese_share else english_ticket(rng))
            source.append(None)
    return rows, source


# --------------------------------------------------------------------------- the two sides


def datasketch_loop(rows: list[str]) -> list[int]:
    """The plain loop: one MinHash per row, ``update()`` per shingle, query, then insert if new."""
    from datasketch import MinHash, MinHashLSH

    template = MinHash(num_perm=NUM_PERM, seed=1)
    lsh = MinHashLSH(threshold=THRESHOLD, num_perm=NUM_PERM)
    kept = []
    for index, row in enumerate(rows):
        minhash = MinHash(num_perm=NUM_PERM, seed=1, permutations=template.permutations, scheme=template.scheme)
        for shingle in shingles(row, NGRAM):
            minhash.update(shingle.encode("utf-8"))
        if lsh.query(minhash):
            continue
        lsh.insert(index, minhash)
        kept.append(index)
    return kept


def seektune_dedup(rows: list[str]) -> list[int]:
    return deduplicate(rows, exact=False, near=True, threshold=THRESHOLD, ngram=NGRAM, num_perm=NUM_PERM).kept


def _timed(function, rows: list[str]) -> tuple[list[int], float]:
    start = time.perf_counter()
    kept = function(rows)
    return kept, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000, help="rows to generate (default 100000)")
    args = parser.parse_args()
    rows, source = ticket_rows(args.rows)
    planted = sum(s is not None for s in source)
    print(f"{len(rows)} rows ({planted} planted near-copies), mean {np.mean([len(r) for r in rows]):.0f} chars")

    ours, ours_s = _timed(seektune_dedup, rows)
    print(f"seektune   : {len(rows) / ours_s:9.0f} rows/s  {ours_s:7.1f} s  kept {len(ours)}")
    theirs, theirs_s = _timed(datasketch_loop, rows)
    print(f"datasketch : {len(rows) / theirs_s:9.0f} rows/s  {theirs_s:7.1f} s  kept {len(theirs)}")

    a, b = set(ours), set(theirs)
    overlap = len(a & b) / len(a | b)
    ratio = (len(rows) / ours_s) / (len(rows) / theirs_s)
    copies = [index for index, s in enumerate(source) if s is not None]
    ours_caught = sum(index not in a for index in copies) / max(len(copies), 1)
    theirs_caught = sum(index not in b for index in copies) / max(len(copies), 1)
    print(f"kept-set Jaccard {overlap:.4f}; only seektune keeps {len(a - b)}, only datasketch keeps {len(b - a)}")
    print(f"planted near-copies removed: seektune {ours_caught:.3f}, datasketch {theirs_caught:.3f}")
    print(json.dumps({
        "ratio": round(ratio, 2),
        "rows": len(rows),
        "planted": planted,
        "seektune_rows_per_s": round(len(rows) / ours_s, 1),
        "datasketch_rows_per_s": round(len(rows) / theirs_s, 1),
        "seektune_s": round(ours_s, 2),
        "datasketch_s": round(theirs_s, 2),
        "seektune_kept": len(ours),
        "datasketch_kept": len(theirs),
        "kept_jaccard": round(overlap, 4),
        "seektune_planted_removed": round(ours_caught, 4),
        "datasketch_planted_removed": round(theirs_caught, 4),
        "python": platform.python_version(),
        "numpy": np.__version__,
    }))


if __name__ == "__main__":
    main()
