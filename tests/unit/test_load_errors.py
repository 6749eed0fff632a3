"""A model name that is neither local, an alias, nor obtainable from the Hub fails in one clear line."""

import pytest


def test_unknown_hub_id_raises_model_not_found_naming_the_aliases(monkeypatch):
    from seektune.models.load import ModelNotFound, load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network wait: the Hub is unreachable here anyway
    with pytest.raises(ModelNotFound, match=r"'no-such/model' is not a local directory.*smollm2-135m-instruct"):
        load_model("no-such/model")
