"""Synthesis: teacher-generated question/answer pairs from documents, their quality gates, and the review page.

    seektune synth examples/customer-service/synth.yaml   # documents -> pairs in <run>/synth/review.sqlite
    seektune review runs/cs-synth                         # people accept, edit or reject each pair

The pairs and decisions live in the review store (``seektune/data/review.py``); ``review_app.py``
is the local web page over it.
"""
