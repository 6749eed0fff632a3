"""seektune: turn a pretrained chat model into a domain assistant."""

__version__ = "0.1.0"
