"""A model name that is neither local, an alias, nor obtainable from the Hub fails in one clear line."""

import pytest


def test_unknown_hub_id_raises_model_not_found_naming_the_aliases(monkeypatch):
    from seektune.models.load import ModelNotFound, load_model

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # no network wait: the Hub is unreachable here anyway
    with pytest.raises(ModelNotFound, match=r"'no-such/model' is not a local directory.*smollm2-135m-instruct"):
        load_model("no-such/model")


def test_an_unreachable_hub_fails_at_once_without_retries(monkeypatch):
    """Offline, transformers would retry the Hub for minutes; seektune tries one connection and stops."""
    import socket

    from seektune.models import load

    attempts = []

    def refuse(address, timeout=None, *args, **kwargs):
        attempts.append(address)
        raise OSError("network is unreachable")

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(socket, "create_connection", refuse)
    load.hub_reachable.cache_clear()
    try:
        for _ in range(2):  # a second model name asks nobody again
            with pytest.raises(load.ModelNotFound, match=r"'nobody/nothing' .* the Hub cannot be reached from here"):
                load.resolve_model_path("nobody/nothing")
    finally:
        load.hub_reachable.cache_clear()
    assert attempts == [("huggingface.co", 443)]
