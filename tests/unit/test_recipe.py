import pytest

from seektune.recipe import RecipeError, load_recipe
from seektune.runs import RunDir, run_of


def write(tmp_path, text):
    path = tmp_path / "recipe.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_typo_names_the_key_and_suggests_the_right_one(tmp_path):
    path = write(tmp_path, "train:\n  lr: 1e-3\n  epocs: 2\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    message = str(info.value)
    assert "train.epocs: unknown key" in message and "did you mean 'train.epochs'" in message
    assert "recipe.yaml" in message


def test_bad_choice_lists_the_allowed_values(tmp_path):
    path = write(tmp_path, "train:\n  schedule: cosnie\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert "train.schedule" in str(info.value)
    for allowed in ("linear", "cosine", "constant"):
        assert allowed in str(info.value)


def test_unknown_section_and_split_sum(tmp_path):
    with pytest.raises(RecipeError, match="tarin: unknown key.*did you mean 'train'"):
        load_recipe(write(tmp_path, "tarin: {}\n"))
    with pytest.raises(RecipeError, match="must sum to 1"):
        load_recipe(write(tmp_path, "data:\n  split: {train: 0.9, val: 0.2, test: 0.1}\n"))


def test_overrides_are_typed_and_reach_nested_fields(tmp_path):
    path = write(tmp_path, "model: smollm2-135m-instruct\ntrain:\n  lr: 1e-3\ndata:\n  paths: [a.jsonl]\n")
    recipe = load_recipe(path, ["train.lr=5e-4", "train.batch_size=4", "model.dtype=float32",
                                "data.split.seed=9", "method.target_modules=[q_proj, v_proj]"])
    assert recipe.train.lr == 5e-4 and recipe.train.batch_size == 4
    assert recipe.model.name == "smollm2-135m-instruct" and recipe.model.dtype == "float32"
    assert recipe.data.split.seed == 9 and recipe.method.target_modules == ["q_proj", "v_proj"]
    assert recipe.data.paths == [str(tmp_path / "a.jsonl")]  # relative to the recipe file
    with pytest.raises(RecipeError, match="train.lerning_rate: unknown key"):
        load_recipe(path, ["train.lerning_rate=1"])
    with pytest.raises(RecipeError, match="key.sub=value"):
        load_recipe(path, ["train.lr"])


def test_resolved_recipe_round_trips(tmp_path):
    path = write(tmp_path, f"output_dir: {tmp_path / 'run'}\ndata:\n  paths: [x.jsonl]\n")
    recipe = load_recipe(path, ["train.epochs=2"])
    run_of(recipe).save_recipe(recipe)
    again = RunDir(tmp_path / "run").recipe()
    assert again == recipe


def test_missing_recipe_and_bad_yaml(tmp_path):
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(tmp_path / "nope.yaml")
    with pytest.raises(RecipeError, match="not valid YAML"):
        load_recipe(write(tmp_path, "train: [unclosed\n"))


def test_typo_inside_an_optional_section_lists_its_keys(tmp_path):
    path = write(tmp_path, "data:\n  balance: {by: category, ratios: {a: 1}, mdoe: up}\n")
    with pytest.raises(RecipeError) as info:
        load_recipe(path)
    assert "data.balance.mdoe: unknown key (did you mean 'data.balance.mode'?)" in str(info.value)


def test_early_stopping_needs_the_val_loss_passes(tmp_path):
    path = write(tmp_path, "train:\n  early_stopping: {patience: 2}\n")
    assert load_recipe(path).train.val_loss is True
    with pytest.raises(RecipeError, match="early_stopping.*needs train.val_loss: true"):
        load_recipe(path, ["train.val_loss=false"])
