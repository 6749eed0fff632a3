"""The synthesis quality gates: each drops what it names, with its reason code, and keeps the rest."""

from __future__ import annotations

import pytest

from seektune.synth import gates, prompts

CHUNK = ("Returns > Refunds\n"
         "Returns are accepted within 45 days of delivery. It must be unused. Refunds reach the original payment "
         "method within 5 business days, and shipping costs $4.95.\n\n"
         "To start a return:\n- Open the Orders page.\n- Choose the item.\n- Print the label.")


def test_sentences_keep_offsets_skip_the_heading_line_and_split_list_items():
    found = gates.sentences(CHUNK)
    assert [s.text for s in found][:3] == ["Returns are accepted within 45 days of delivery.", "It must be unused.",
                                           "Refunds reach the original payment method within 5 business days, and "
                                           "shipping costs $4.95."]
    assert all(CHUNK[s.start:s.end] == s.text for s in found)
    assert [s.text for s in found if s.is_list_item] == ["- Open the Orders page.", "- Choose the item.",
                                                         "- Print the label."]
    chinese = gates.sentences("退货\n商品可在签收后45天内退货。退款将在5个工作日内到账！")
    assert [s.text for s in chinese] == ["商品可在签收后45天内退货。", "退款将在5个工作日内到账！"]


def test_facts_are_amounts_durations_and_glossary_terms():
    assert gates.facts_of("Refunds take 5 business days; shipping is $4.95 and 10% off.") == \
        ["$4.95", "10%", "5 business days"]
    assert gates.facts_of("Use StoreCredit within 45 days.", glossary=["StoreCredit"]) == ["45 days", "StoreCredit"]
    assert gates.facts_of("商品可在签收后45天内退货") == ["45天"]


def test_support_is_exact_about_numbers_and_lexical_for_words():
    sources = [CHUNK]
    assert not gates.unsupported("Returns are accepted within 45 days of delivery.", sources, 0.7)
    assert gates.unsupported("Returns are accepted within 60 days of delivery.", sources, 0.7)  # a number not there
    assert gates.unsupported("Exchanges require a manager signature and photo identification.", sources, 0.7)


@pytest.mark.parametrize("reply, expected", [
    ('You can ask: "What is the refund policy for your order?"', "What is the refund policy for your order?"),
    ("Question: How long do refunds take? They take 5 days.", "How long do refunds take?"),
    ("1. Can I return an opened item?\n2. Another?", "Can I return an opened item?"),
    ("问题：退款需要多久？", "退款需要多久？"),
])
def test_the_question_is_taken_out_of_a_chatty_reply(reply, expected):
    assert gates.clean_question(reply) == expected


@pytest.mark.parametrize("question, reason", [
    ("", "garbage"),
    ("Passage: returns", "garbage"),
    ("why " * 12, "garbage"),
    ("Why?", "question_length"),
    ("This is a customer's question.", "not_a_question"),
    ("What does this section say about refunds?", "not_self_contained"),
    ("According to the passage, how long do refunds take?", "not_self_contained"),
    ("请问退款一般需要多久才能到账？", "wrong_language"),
    ("How long do refunds take?", None),
])
def test_question_gates(question, reason):
    assert gates.question_gates(question, "en", 8, 300) == reason


def test_off_topic_and_glossary_gates():
    answer = "Refunds reach the original payment method within 5 business days."
    assert gates.off_topic("What is the weather like today?", answer)
    assert not gates.off_topic("How fast is a refund?", answer)
    assert gates.glossary_changed("Pay with store credit", ["StoreCredit", "store credit"]) is None
    assert gates.glossary_changed("Pay with Storecredit today", ["StoreCredit"]) == "StoreCredit"
    assert gates.glossary_changed("Pay with Store  Credit", ["Store Credit"]) == "Store Credit"


def test_support_spans_mark_the_sentences_the_answer_uses():
    answer = "Returns are accepted within 45 days of delivery."
    spans = gates.support_spans(answer, CHUNK)
    assert [CHUNK[a:b] for a, b in spans] == [answer]


def test_generated_replies_parse_into_question_and_answer():
    assert prompts.parse_generated("Q: How long?\nA: Within 45 days\nof delivery.") == \
        ("How long?", "Within 45 days of delivery.")
    assert prompts.parse_generated("Sure! Here is a question.") is None


def test_a_teacher_spelling_of_a_glossary_term_is_fixed_in_questions():
    assert gates.fix_glossary("How do I earn petal  points?", ["Petal Points"]) == \
        ("How do I earn Petal Points?", ["Petal Points"])
    assert gates.fix_glossary("Is LarkCare worth it?", ["LarkCare"]) == ("Is LarkCare worth it?", [])


def test_chatty_preambles_before_the_question_are_cut():
    reply = "I love it! This is a classic example: Question: What's your best-selling product?"
    assert gates.clean_question(reply) == "What's your best-selling product?"
    assert gates.clean_question("Hello, welcome. What can I help you with?") == "What can I help you with?"


def test_sharing_only_the_documents_common_words_is_off_topic():
    texts = [f"Larkspur Goods customers {topic} policy." for topic in
             ["return", "refund", "shipping", "warranty", "payment", "account", "gift", "points"]]
    common = gates.common_words(texts)
    assert {"larks", "custo"} <= common
    answer = "After 8 days without a tracking update, Larkspur Goods customers get a missing-package claim."
    assert gates.off_topic("What is the Larkspur Goods customers' favourite colour?", answer, common)
    assert not gates.off_topic("When does a missing package get a claim?", answer, common)


def test_heading_path_lines_and_list_introductions_are_not_answers():
    chunk = "Orders > Statuses\nAn order moves through these statuses:\n- Received\n- Packed\n" \
            "Orders > Statuses > Shipped\nA shipped order has an active tracking number."
    texts = [s.text for s in gates.sentences(chunk)]
    assert "Orders > Statuses > Shipped" not in texts and "A shipped order has an active tracking number." in texts


@pytest.mark.parametrize("answer, heading, language, question", [
    ("Sprig Pay lets customers split orders of $120 or more into 4 payments.", "Payment > Sprig Pay", "en",
     "What should I know about Sprig Pay?"),
    ("Standard shipping arrives in 4 to 7 business days.", "Shipping > Delivery times", "en",
     "Delivery times - what should I know about standard shipping?"),
    ("商品可在签收后45天内退货。", "退货", "zh", "关于商品，有什么规定？"),
])
def test_template_questions_ask_about_the_answers_subject(answer, heading, language, question):
    assert prompts.template_question(answer, heading, language) == question
    assert gates.question_gates(question, language, 8, 300) is None


@pytest.mark.parametrize("sentence, language, questions", [
    ("Returns are accepted within 45 days of delivery.", "en",
     ["Returns are accepted within how many days of delivery?"]),
    ("The support team is available 7am to 9pm Central.", "en",
     ["The support team is available what time to 9pm Central?", "The support team is available 7am to what time "
      "Central?"]),
    ("Members get 9% off every order and pay $4.95 for shipping.", "en",
     ["Members get 9% off every order and pay how much for shipping?",
      "Members get what percentage off every order and pay $4.95 for shipping?"]),
    ("商品可在签收后45天内退货。", "zh", ["商品可在签收后多少天内退货？"]),
    ("Returns are easy.", "en", []),
])
def test_cloze_questions_ask_for_each_fact_of_the_sentence(sentence, language, questions):
    assert prompts.cloze_questions(sentence, language) == questions
    for question in questions:
        assert gates.question_gates(question, language, 8, 300) is None


@pytest.mark.parametrize("sentence, question", [
    ("LarkCare can be added to an item up to 21 days after the item is delivered.", "How long is LarkCare?"),
    ("Sprig Pay lets customers split orders of $120 or more into 4 payments.", "How much is Sprig Pay?"),
    ("Returns are easy.", None),
])
def test_short_questions_name_the_subject_and_the_kind_of_fact(sentence, question):
    assert prompts.short_question(sentence, "en") == question


def test_a_chinese_duration_gets_a_how_long_question():
    assert prompts.short_question("退货期限是签收后45天。", "zh") == "退货期限要多久？"
