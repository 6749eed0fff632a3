"""The rule rewards of objective: grpo (seektune/train/rewards.py), on hand-written completions."""

from types import SimpleNamespace

import pytest

from seektune.train.rewards import (
    GlossaryEntry, fact_found, facts_score, format_score, glossary_score, language_score, length_score, make_reward,
    match_score, number_values,
)


def spec(name, **keys):
    return SimpleNamespace(name=name, weight=1.0, pattern=None, budget=256, function=None, **keys)


def test_facts_are_found_however_their_numbers_are_written():
    assert fact_found("Returns are accepted within 45 days of delivery.", "45 days")
    assert fact_found("You have forty-five days to send it back.", "45 days")
    assert fact_found("签收后四十五天内都可以退货。", "45天")
    assert fact_found("签收后４５天内都可以退货。", "45天")  # full-width digits
    assert fact_found("Express costs 14.50 dollars.", "$14.50")
    assert fact_found("We ship orders over $1000 free.", "$1,000")
    assert not fact_found("Returns are accepted within 30 days.", "45 days")
    assert not fact_found("It takes 45 minutes.", "45 days")  # the number alone is not the fact
    assert not fact_found("Nothing here.", "HELLOLARK")
    assert number_values("1,000 and 1000.00 and 3.5") == number_values("1000 1000 3.50")


def test_facts_reward_is_the_share_of_facts_and_skips_rows_without_them():
    assert facts_score("Bloom starts at 2,500 points.", ["Bloom", "2,500", "5%"]) == pytest.approx(2 / 3)
    assert facts_score("anything", []) is None
    reward = make_reward(spec("facts"))
    scores = reward(prompts=["q1", "q2"], completions=["<think>45 days? no, 30</think>30 days", "It is 45 days."],
                    facts=[["45 days"], ["45 days"]])
    assert scores == [0.0, 1.0]  # the reasoning's "45 days" is not the answer
    assert reward.__name__ == "facts"


def test_format_reward_wants_one_non_empty_think_block_then_an_answer():
    assert format_score("<think>The handbook says 45 days.</think>45 days.") == 1.0
    assert format_score("<think>reasoning</think>") == 0.0  # no answer
    assert format_score("<think> </think>45 days") == 0.0  # empty reasoning
    assert format_score("45 days") == 0.0
    assert format_score("<think>reasoning, never closed") == 0.0  # missing </think>
    assert format_score("<think>a</think>b<think>c</think>d") == 0.0
    # an R1 template opened <think> in the prompt: the completion starts inside it
    reward = make_reward(spec("format"))
    assert reward(prompts=["<｜User｜>hi<｜Assistant｜><think>\n"], completions=["checking</think>45 days"]) == [1.0]
    assert reward(prompts=[[{"role": "user", "content": "hi"}]],
                  completions=[[{"role": "assistant", "content": "checking</think>45 days"}]]) == [0.0]


def test_language_reward_is_the_share_of_the_expected_language():
    assert language_score("<think>退货期限是45天</think>可以退货。", "zh") == 1.0
    # 4 ideographs against 15 letters, counted as 3 words
    assert language_score("<think>the return window</think>可以退货", "zh") == pytest.approx(4 / 7)
    assert language_score("<think>the return window</think>可以退货", "en") == pytest.approx(3 / 7)
    assert language_score("45 / 30", "en") is None and language_score("text", "fr") is None


def test_glossary_reward_forbids_variants_and_wants_the_terms_the_reference_uses():
    glossary = [GlossaryEntry("定金", ("订金",)), GlossaryEntry("权利", ("权力",))]
    reference = "买方支付的定金具有担保作用。"
    assert glossary_score("支付的定金可以抵作价款。", reference, glossary) == 1.0
    assert glossary_score("支付的订金可以抵作价款。", reference, glossary) == 0.0
    assert glossary_score("支付的款项可以抵作价款。", reference, glossary) == 0.0  # the term is missing
    assert glossary_score("没有相关条款。", "没有相关条款。", glossary) == 1.0
    assert glossary_score("x", "y", []) is None


def test_match_reward_compares_final_values_numerically():
    assert match_score(r"<think>2+2</think>The total is \boxed{4.0}", r"\boxed{4}") == 1.0
    assert match_score(r"\boxed{5}", "4") == 0.0
    assert match_score("no box", "4") == 0.0
    assert match_score("Answer: B", "Answer: B", pattern=r"Answer:\s*([A-D])") == 1.0
    assert match_score(r"\boxed{yes}", r"\boxed{Yes}") == 1.0
    assert match_score("x", None) is None


def test_length_reward_falls_past_the_budget():
    assert length_score(100, 256) == 1.0
    assert length_score(384, 256) == 0.5
    assert length_score(600, 256) == 0.0
    reward = make_reward(SimpleNamespace(name="length", budget=4, pattern=None, function=None))
    assert reward(prompts=["p", "p"], completions=["a", "b"], completion_ids=[[1, 2], [1, 2, 3, 4, 5, 6]]) == [1.0, 0.5]


def test_a_python_reward_is_loaded_and_a_missing_one_named(tmp_path, monkeypatch):
    (tmp_path / "my_rewards.py").write_text("def polite(prompts, completions, **kw):\n"
                                            "    return [float('please' in c) for c in completions]\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    reward = make_reward(SimpleNamespace(name="python", function="my_rewards:polite"))
    assert reward(prompts=["p"], completions=["please wait"]) == [1.0]
    with pytest.raises(ValueError, match="my_rewards:rude.*cannot be loaded"):
        make_reward(SimpleNamespace(name="python", function="my_rewards:rude"))


def test_a_grpo_recipe_is_checked_before_training(tmp_path):
    from seektune.recipe import RecipeError, load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("objective: grpo\ndata: {paths: [faq.jsonl]}\n", encoding="utf-8")
    loaded = load_recipe(recipe, ["grpo.rewards=[facts, {name: format, weight: 0.5}]"])
    assert [(r.name, r.weight) for r in loaded.grpo.rewards] == [("facts", 1.0), ("format", 0.5)]
    with pytest.raises(RecipeError, match=r"must be a multiple of it"):
        load_recipe(recipe, ["grpo.num_generations=3"])  # batch 8 is not 3 groups
    with pytest.raises(RecipeError, match="needs function: module:function"):
        load_recipe(recipe, ["grpo.rewards=[python]"])
    with pytest.raises(RecipeError, match="grpo.rewards.0.name"):
        load_recipe(recipe, ["grpo.rewards=[fatcs]"])
    with pytest.raises(RecipeError, match="grpo.rewards is empty"):
        load_recipe(recipe, ["grpo.rewards=[]"])


def test_the_glossary_reward_gets_the_recipes_forbidden_variants(tmp_path):
    from seektune.recipe import load_recipe
    from seektune.train.grpo import glossary_entries

    (tmp_path / "g.csv").write_text("term,forbidden\n定金,订金\nLarkCare,\n", encoding="utf-8")
    (tmp_path / "r.yaml").write_text("objective: grpo\ndata: {paths: [faq.jsonl]}\neval: {glossary: g.csv}\n"
                                     "grpo: {rewards: [glossary]}\n", encoding="utf-8")
    entries = glossary_entries(load_recipe(tmp_path / "r.yaml"))
    assert entries == [GlossaryEntry("定金", ("订金",)), GlossaryEntry("LarkCare")]
    assert glossary_score("支付的订金可以退。", "定金不退。", entries) == 0.0


def test_format_reward_of_an_r1_template_that_opened_think_for_a_conversational_prompt():
    reward = make_reward(spec("format"), opens_think=True)  # trl passes the prompt as messages, not text
    prompt = [{"role": "user", "content": "hi"}]
    assert reward(prompts=[prompt, prompt], completions=[[{"role": "assistant", "content": "checking</think>45"}],
                                                         [{"role": "assistant", "content": "45 days"}]]) == [1.0, 0.0]


def test_the_judge_reward_asks_an_endpoint_and_reads_its_score():
    import json
    from http.server import BaseHTTPRequestHandler

    from tests.conftest import send_json, serve_http

    asked = []

    class Judge(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 - http.server's name
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            text = body["messages"][-1]["content"]
            asked.append(text)
            answer = text.split("<answer>")[1]
            reply = "no idea" if "pardon" in answer else ("9" if "45 days" in answer else "2 out of 10")
            send_json(self, {"choices": [{"message": {"role": "assistant", "content": reply}}]})

        def log_message(self, *args):
            pass

    served = serve_http(Judge)
    url = next(served)
    try:
        reward = make_reward(SimpleNamespace(name="judge", endpoint=url, model="m", rubric="Be right.",
                                             api_key_env=None, pattern=None, budget=1, function=None))
        prompt = [{"role": "user", "content": "How long do I have to return it?"}]
        scores = reward(prompts=[prompt] * 3, completions=["<think>hmm</think>45 days.", "30 days.", "pardon?"],
                        reference=["Returns are accepted within 45 days."] * 3)
    finally:
        next(served, None)
    assert scores == [0.9, 0.2, None] and reward.__name__ == "judge"
    assert all("Rubric: Be right." in text and "How long do I have to return it?" in text for text in asked)
    assert not any("hmm" in text for text in asked)  # the judge sees the answer, not the reasoning


def test_a_judge_reward_needs_an_endpoint(tmp_path):
    from seektune.recipe import RecipeError, load_recipe

    recipe = tmp_path / "r.yaml"
    recipe.write_text("objective: grpo\ndata: {paths: [faq.jsonl]}\n", encoding="utf-8")
    with pytest.raises(RecipeError, match="judge reward needs endpoint"):
        load_recipe(recipe, ["grpo.rewards=[judge]"])
    judge = "{name: judge, endpoint: 'http://127.0.0.1:9/v1', weight: 0.5}"
    loaded = load_recipe(recipe, [f"grpo.rewards=[facts, {judge}]"])
    assert loaded.grpo.rewards[1].endpoint == "http://127.0.0.1:9/v1"
