"""Rule-written questions (seektune/synth/qgen.py): a sentence turned around by its dependency parse.

Each expected question below was checked by hand against its sentence; the assertions are on the
parts that make a question usable - the wh-word fits the fact, the fact itself is not in the question,
the subject and verb survive the inversion."""

import pytest

from seektune.synth import qgen

pytestmark = pytest.mark.skipif(not qgen.available(), reason="needs the [synth] extra (spaCy + en_core_web_sm)")


def test_money_fact_gives_how_much_with_do_support_and_a_terse_form():
    got = qgen.questions("Express shipping costs $14.50 per order.")
    assert got[0] == "How much does express shipping cost?"
    assert "express shipping cost?" in got
    assert not any("14.50" in q for q in got)


def test_modal_is_inverted_and_count_unit_kept():
    got = qgen.questions("A Gather List can hold up to 150 items.")
    assert got[0].startswith("How many items can a Gather List hold")
    assert "150" not in got[0]


def test_duration_after_gives_how_long_until_and_a_yes_no_question():
    got = qgen.questions("Petal Points expire after 15 months with no account activity.")
    assert got[0].startswith("How long until Petal Points expire")
    assert all("15" not in q for q in got)


def test_customer_subject_asks_as_i_and_terse_form_is_verb_object():
    got = qgen.questions("Customers can exchange an item for a different size or color within 60 days of delivery.")
    assert got[0] == "How long can I exchange an item for a different size or color?"
    assert "Can I exchange an item for a different size or color?" in got
    assert "exchange item?" in got


def test_condition_gives_what_happens_without_its_fact():
    got = qgen.questions("If a backordered item is not available within 35 days of the order, Larkspur Goods "
                         "cancels that item and refunds the customer automatically.")
    assert "What happens if a backordered item is not available?" in got


def test_a_sentence_that_names_a_fact_is_asked_by_its_subject():
    assert qgen.questions("The Larkspur Goods support phone number is 1-800-555-0143.") == \
        ["What number is the Larkspur Goods support phone number?"]


def test_passive_terse_form_keeps_the_participle():
    got = qgen.questions("Once a return reaches the warehouse, the refund is processed within 6 business days.")
    assert got[0] == "How long is the refund processed?"
    assert "refund processed?" in got


def test_sentences_it_cannot_turn_around_give_nothing():
    assert qgen.questions("") == []
    assert qgen.questions("Thanks for shopping with us!") == []  # no subject-verb statement


def test_the_business_is_asked_as_you_and_its_customer_becomes_my():
    got = qgen.questions("After an account is closed, Larkspur Goods permanently deletes the customer's data "
                         "within 9 days.", organisation="Larkspur Goods")
    assert got[0] == "How long do you permanently delete my data?"
    assert "How long does Larkspur Goods permanently delete the customer's data?" in got
    assert "What happens after an account is closed?" in qgen.questions(
        "After an account is closed, Larkspur Goods permanently deletes the customer's data within 9 days.", limit=9)


def test_organisation_is_the_name_that_clearly_leads():
    texts = ["Larkspur Goods ships fast. Larkspur Goods sells tents."] * 3 + ["Petal Points expire."]
    assert qgen.organisation_of(texts) == "Larkspur Goods"
    assert qgen.organisation_of(["Petal Points and Sprig Pay. Petal Points and Sprig Pay."] * 3) is None  # a tie
    assert qgen.organisation_of(["Larkspur Goods sells tents."]) is None  # too rare to tell
