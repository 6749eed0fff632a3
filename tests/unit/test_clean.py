import copy

import pytest

from seektune.data.clean import (
    CLEANERS,
    DEFAULT_CLEAN_STEPS,
    collapse_whitespace,
    fix_punctuation,
    make_cleaner,
    nfkc,
    regex_replace,
    strip_control,
    strip_html,
    unescape_html,
)
from seektune.data.filters import (
    FILTER_REASONS,
    FILTERS,
    FilterConfig,
    FilterFailure,
    count_tokens,
    filter_reason,
    repetition_ratio,
    symbol_ratio,
)
from seektune.data.pii import id_card_valid, luhn_valid, mask_pii

VALID_ID = "11010519491231002X"  # the standard example: born 1949-12-31, check character X
WRONG_CHECKSUM_ID = "110105194912310021"
VISA = "4111 1111 1111 1111"  # the classic Luhn-valid test number


def record(*turns: str, system: str | None = None, reasoning: str | None = None) -> dict:
    """user, assistant, user, ... with an optional system prompt and reasoning on the last answer."""
    messages = [{"role": "system", "content": system}] if system is not None else []
    messages += [{"role": ("user", "assistant")[i % 2], "content": text} for i, text in enumerate(turns)]
    if reasoning is not None:
        messages[-1]["reasoning"] = reasoning
    return {"messages": messages, "meta": {"origin": "faq.jsonl:12", "facts": ["45 days"]}}


# --- strip_control ------------------------------------------------------------------------------------------------

def test_strip_control_removes_c0_c1_zero_width_and_bom_but_keeps_newline_and_tab():
    assert strip_control("\ufeffa\x00b\u200bc\x85d\x1b[0m\u2060e\r\nf\tg\rh") == "abcd[0me\nf\tg\nh"


def test_strip_control_keeps_plain_text_and_emoji_joiners():
    text = "Returns: 45 days.\n\t退货期限是45天。👨\u200d👩\u200d👧"
    assert strip_control(text) == text
    assert strip_control("x\u200dy") == "xy"  # a joiner outside an emoji sequence is just invisible noise


# --- strip_html ---------------------------------------------------------------------------------------------------

def test_strip_html_keeps_text_and_turns_breaks_into_newlines():
    assert strip_html("<p>Hello <b>world</b></p><p>Next<br/>line</p>") == "Hello world\n\nNext\nline"
    assert strip_html("<ul><li>a</li><li>b</li></ul>") == "a\nb"
    assert strip_html('<div class="x" data-id=\'3\'>hi</div>') == "hi"
    assert strip_html("<input disabled>ok") == "ok"


def test_strip_html_drops_script_style_and_comments():
    assert strip_html("<script>alert(1)</script>a<style>.x{}</style>b<!-- note -->c<!DOCTYPE html>") == "abc"


def test_strip_html_keeps_comparisons_generics_and_code():
    for text in ["if a < b and c > d", "if a<b and c>d", "List<Map> and Vec<u8> and x<y", "mail <user@example.com>",
                 "Use `<div>` here", "```html\n<p>keep</p>\n```"]:
        assert strip_html(text) == text


# --- unescape_html ------------------------------------------------------------------------------------------------

def test_unescape_html_decodes_complete_entities():
    assert unescape_html("AT&amp;T &#39;q&#39; &lt;b&gt; &#x4e2d;") == "AT&T 'q' <b> 中"
    assert unescape_html("a&nbsp;b") == "a\xa0b"


def test_unescape_html_leaves_urls_unknown_names_and_code():
    for text in ["?a=1&not=2&copy=3", "R&D and Q&A", "&madeup;", "`&amp;`"]:
        assert unescape_html(text) == text


# --- nfkc ---------------------------------------------------------------------------------------------------------

def test_nfkc_folds_fullwidth_letters_digits_and_ligatures():
    assert nfkc("ＡＢＣ１２３ ﬁle") == "ABC123 file"


def test_nfkc_keeps_chinese_punctuation_and_units():
    for text in ["你好，世界！（测试）：是；吗？", "80 m² for ½ price…", "H₂O", "plain ascii"]:
        assert nfkc(text) == text


# --- whitespace ---------------------------------------------------------------------------------------------------

def test_whitespace_collapses_runs_trailing_space_and_blank_lines():
    assert collapse_whitespace("  a   b\t\tc  \n\n\n\nd \u3000 e  \r\n") == "a b c\n\nd e"


def test_whitespace_keeps_indentation_and_code_blocks():
    text = "Steps:\n  - one\n  - two\n\n```python\nx  =  1\n\n\n\ny = 2\n```"
    assert collapse_whitespace(text) == text
    assert collapse_whitespace("one line") == "one line"


# --- punctuation --------------------------------------------------------------------------------------------------

def test_punctuation_zh_makes_marks_fullwidth_next_to_chinese():
    assert fix_punctuation("你好,世界.真的?!注意:请", style="zh") == "你好，世界。真的？！注意：请"
    assert fix_punctuation("请访问www.example.com,谢谢.") == "请访问www.example.com，谢谢。"


def test_punctuation_zh_keeps_numbers_urls_emails_files_and_code():
    for text in ["运费是4.95美元", "访问example.com获取", "邮箱user@example.com", "时间10:30开始",
                 "文件报告.pdf已发送", "好的...", "代码`a,b`和`c.d`中文中文"]:
        assert fix_punctuation(text, style="zh") == text


def test_punctuation_en_makes_fullwidth_marks_ascii():
    assert fix_punctuation("Hello，world。Price：4.95（USD）at 10：30", style="en") == (
        "Hello, world. Price: 4.95 (USD) at 10:30")


def test_punctuation_style_only_touches_its_language():
    assert fix_punctuation("Hello，world", style="zh") == "Hello，world"
    assert fix_punctuation("你好,世界", style="en") == "你好,世界"
    with pytest.raises(ValueError, match="'fr'"):
        fix_punctuation("x", style="fr")


# --- pii ----------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, masked", [
    ("write to user@example.com.", "write to [EMAIL]."),
    ("邮箱a.b+c@mail.example.co.uk谢谢", "邮箱[EMAIL]谢谢"),
    ("手机13812345678", "手机[PHONE]"),
    ("call +86 138 1234 5678 now", "call [PHONE] now"),
    ("或138-1234-5678。", "或[PHONE]。"),
    ("(415) 555-0143", "[PHONE]"),
    ("+1 415-555-0143 or 1-800-555-0199 or 415.555.0143", "[PHONE] or [PHONE] or [PHONE]"),
    ("London +44 20 7946 0958; Beijing 010-62345678", "London [PHONE]; Beijing [PHONE]"),
    ("server 192.168.1.20.", "server [IP]."),
    ("v6 2001:db8::1 and 2001:0db8:85a3:0000:0000:8a2e:0370:7334", "v6 [IP] and [IP]"),
    (f"身份证{VALID_ID}，", "身份证[ID_CARD]，"),
    (f"card {VISA} / 4111-1111-1111-1111 / 4111111111111111", "card [BANK_CARD] / [BANK_CARD] / [BANK_CARD]"),
    ("UnionPay 6222021234567890128, Amex 3782 822463 10005", "UnionPay [BANK_CARD], Amex [BANK_CARD]"),
])
def test_pii_masks(text, masked):
    assert mask_pii(text) == masked


@pytest.mark.parametrize("text", [
    f"wrong checksum {WRONG_CHECKSUM_ID}",
    "bad Luhn 4111 1111 1111 1112",
    "order LG12345678 and order 1234567812345670",  # the second is Luhn-valid but no card starts with 1
    "price $1,299.00, year 2024, date 2024-01-15, qty 12345, ticket #4521",
    "std::cout, 10:30:45, MAC 00:1A:2B:3C:4D:5E, 999.1.1.1, version 1.2.3, 4.95",
    "@handle and a@b",
])
def test_pii_leaves_lookalikes(text):
    assert mask_pii(text) == text


def test_pii_checksums():
    assert id_card_valid(VALID_ID) and id_card_valid(VALID_ID.lower())
    assert not id_card_valid(WRONG_CHECKSUM_ID)
    assert not id_card_valid("110105194902301234")  # February 30th
    assert luhn_valid("4111111111111111") and not luhn_valid("4111111111111112")


def test_pii_types_option_and_id_card_before_phone():
    text = f"user@example.com 13812345678 {VALID_ID}"
    assert mask_pii(text, types=["email"]) == f"[EMAIL] 13812345678 {VALID_ID}"
    assert mask_pii(text, types=["phone", "id_card"]) == "user@example.com [PHONE] [ID_CARD]"
    with pytest.raises(ValueError, match="ssn"):
        mask_pii(text, types=["ssn"])


# --- regex --------------------------------------------------------------------------------------------------------

def test_regex_replaces_and_validates():
    assert regex_replace("ACME and ACMEX", pattern=r"\bACME\b", replace="[BRAND]") == "[BRAND] and ACMEX"
    assert regex_replace("Order 12", pattern=r"(?i)order (\d+)", replace=r"#\1") == "#12"
    with pytest.raises(ValueError, match=r"pattern '\(' does not compile"):
        regex_replace("x", pattern="(")


# --- make_cleaner -------------------------------------------------------------------------------------------------

def test_default_steps_clean_a_scraped_answer():
    cleaner = make_cleaner(DEFAULT_CLEAN_STEPS)
    dirty = record("\ufeffHow&nbsp;long?  ", "<p>Returns are accepted&nbsp;within <b>45</b>&nbsp;days.</p>\n\n\n")
    assert [m["content"] for m in cleaner(dirty)["messages"]] == ["How long?", "Returns are accepted within 45 days."]
    assert list(CLEANERS) == [*DEFAULT_CLEAN_STEPS, "punctuation", "pii", "regex"]


def test_steps_run_in_order():
    unescape_first = make_cleaner(["unescape_html", "strip_html"])
    strip_first = make_cleaner(["strip_html", "unescape_html"])
    answer = "&lt;b&gt;bold&lt;/b&gt;"
    assert unescape_first(record("q", answer))["messages"][1]["content"] == "bold"
    assert strip_first(record("q", answer))["messages"][1]["content"] == "<b>bold</b>"


def test_options_steps_and_changed_counts():
    cleaner = make_cleaner([
        {"pii": {"types": ["email", "phone"]}},
        {"regex": {"pattern": r"\bACME\b", "replace": "[BRAND]"}},
        {"regex": {"pattern": "x", "replace": "y"}},
        "whitespace",
    ])
    out = cleaner(record("mail me at a@b.com", "ACME says hi", reasoning="call 13812345678"))
    assert [m["content"] for m in out["messages"]] == ["mail me at [EMAIL]", "[BRAND] says hi"]
    assert out["messages"][1]["reasoning"] == "call [PHONE]"
    cleaner(record("clean", "clean"))
    assert dict(cleaner.changed) == {"pii": 1, "regex": 1, "regex#2": 0, "whitespace": 0}


def test_cleaner_returns_a_new_record_and_is_deterministic():
    original = record("<b>q</b>", "a  b", system="sys", reasoning="<i>r</i>")
    snapshot = copy.deepcopy(original)
    cleaner = make_cleaner(DEFAULT_CLEAN_STEPS)
    first, second = cleaner(original), cleaner(original)
    assert original == snapshot
    assert first == second and first is not original
    assert first["meta"] == original["meta"] and first["meta"] is not original["meta"]
    assert first["messages"][2] == {"role": "assistant", "content": "a b", "reasoning": "r"}


def test_reasoning_emptied_by_cleaning_is_dropped():
    out = make_cleaner(["strip_html"])(record("q", "a", reasoning="<br>"))
    assert out["messages"][1] == {"role": "assistant", "content": "a"}


@pytest.mark.parametrize("steps, message", [
    (["strip_control", "spellcheck"], "unknown cleaning step 'spellcheck'; allowed: strip_control, strip_html"),
    ([{"regex": {"pattern": "("}}], r"cleaning step 'regex': pattern '\(' does not compile"),
    ([{"regex": {"replace": "x"}}], r"'regex' needs option\(s\) \['pattern'\]"),
    ([{"regex": {"pattern": "a", "replace": r"\9"}}], "invalid group reference"),
    ([{"pii": {"typez": ["email"]}}], r"'pii' has no option\(s\) \['typez'\]; its options: \['types'\]"),
    ([{"punctuation": {"style": "fr"}}], "'fr'"),
    ([{"nfkc": {}, "whitespace": {}}], "one-key mapping"),
])
def test_bad_steps_fail_when_the_cleaner_is_made(steps, message):
    with pytest.raises(ValueError, match=message):
        make_cleaner(steps)


# --- filters ------------------------------------------------------------------------------------------------------

GOOD = record("How long do I have to return something?", "Returns are accepted within 45 days of delivery.")


def reason(rec, tokenizer=None, **config):
    failure = filter_reason(rec, FilterConfig(**config), tokenizer)
    return None if failure is None else failure.reason


def test_good_records_pass_every_filter():
    assert filter_reason(GOOD, FilterConfig()) is None
    assert reason(record("退货期限是多久？", "退货期限是45天。", system="You are a helpful assistant."), languages=["zh"]) is None
    assert reason(record("2+2?", "4", reasoning="2 plus 2 is 4.")) is None


def test_turn_length():
    assert reason(record("   ", "answer")) == "empty_turn"
    assert reason(record("q", "a", system="")) == "empty_turn"
    assert reason(record("hi", "hello"), min_chars=3) == "turn_too_short"
    assert reason(record("hey", "hello"), min_chars=3) is None


def test_role_order_reuses_format_reason_codes():
    assert reason(record("q", "a", "q2")) == "odd_turn_count"
    swapped = {"messages": [{"role": "assistant", "content": "a"}, {"role": "user", "content": "q"}], "meta": {}}
    assert reason(swapped) == "bad_role_order"
    assert reason(swapped, check_roles=False) is None


def test_answer_length():
    assert reason(record("2+2?", "4"), min_answer_chars=2) == "answer_too_short"
    assert reason(record("2+2?", "", reasoning="thinking")) == "answer_too_short"
    assert reason(record("2+2?", "It is 4"), min_answer_chars=2) is None


def test_total_length_counts_visible_characters():
    assert reason(record("abc", "de f"), max_chars=5) == "too_long_chars"
    assert reason(record("abc", "de f"), max_chars=6) is None


def test_repetition():
    assert repetition_ratio("the the the the the") == pytest.approx(2 / 3)
    assert repetition_ratio("Returns are accepted within 45 days of delivery.") == 0.0
    assert repetition_ratio("yes yes") == 0.0
    assert reason(record("q", "the the the the the the the the")) == "repetitive"
    assert reason(record("问题", "好的好的好的好的好的好的好的好的")) == "repetitive"
    assert reason(record("q", "ok", reasoning="wait, let me check. " * 10)) == "repetitive"
    assert reason(record("q", "the the the the"), max_repetition=None) is None
    failure = filter_reason(record("q", "the the the the the the the the"), FilterConfig())
    assert failure == FilterFailure("repetitive", "message 2 (assistant) answer repetition 0.83 > max_repetition 0.5")


def test_symbols():
    assert symbol_ratio("a-b c!") == pytest.approx(2 / 5) and symbol_ratio("退货，45天") == pytest.approx(1 / 6)
    assert symbol_ratio("नमस्ते") == 0.0  # combining vowel signs are part of the word
    assert reason(record("q", "#$%^&*()!@#$%^&*")) == "garbage"
    assert reason(record("???", "Use `x = {a: 1}` in the config.")) is None  # short turns are not judged
    assert reason(record("q", "#$%^&*()!@#$%^&*"), max_symbol_ratio=None) is None


def test_language():
    assert reason(GOOD, languages=["zh"]) == "wrong_language"
    assert reason(GOOD, languages=["en", "zh"]) is None
    chinese_with_code = record("怎么打印？", "用下面的代码打印：\n```python\nprint('hello world from python code')\n```")
    assert reason(chinese_with_code, languages=["zh"]) is None
    assert reason(record("q", "a"), languages=None) is None
    with pytest.raises(ValueError, match="'fr'"):
        FilterConfig(languages=["fr"])


@pytest.fixture(scope="module")
def word_tokenizer():
    """Whitespace word-level tokenizer: token counts are exact word counts."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = "how long do i have to return something ? returns are accepted within 45 days of delivery . [UNK]"
    vocab = {word: index for index, word in enumerate(dict.fromkeys(words.split()))}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return tokenizer


def test_token_count(word_tokenizer):
    from transformers import PreTrainedTokenizerFast

    assert count_tokens(word_tokenizer, "how long ?") == 3
    assert count_tokens(PreTrainedTokenizerFast(tokenizer_object=word_tokenizer), "how long ?") == 3
    rec = record("how long ?", "45 days .", reasoning="returns")  # 7 tokens with the reasoning
    assert reason(rec, word_tokenizer, min_tokens=8) == "too_few_tokens"
    assert reason(rec, word_tokenizer, max_tokens=6) == "too_many_tokens"
    assert reason(rec, word_tokenizer, min_tokens=7, max_tokens=7) is None
    assert reason(rec, None, min_tokens=100) is None  # no tokenizer: token filters are skipped
    assert filter_reason(rec, FilterConfig(max_tokens=6), word_tokenizer).detail == (
        "conversation has 7 tokens > max_tokens 6")


def test_first_failure_wins_and_registry_is_complete():
    assert reason(record("", "the the the the the the"), max_repetition=0.1) == "empty_turn"
    assert list(FILTERS) == ["turn_length", "role_order", "answer_length", "total_length", "token_count", "language",
                             "symbols", "repetition"]
    assert len(set(FILTER_REASONS)) == len(FILTER_REASONS)


def test_filter_config_validates_thresholds():
    with pytest.raises(ValueError, match="max_repetition"):
        FilterConfig(max_repetition=1.5)
    with pytest.raises(ValueError, match="min_tokens"):
        FilterConfig(min_tokens=10, max_tokens=5)
