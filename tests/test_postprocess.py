import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from app.core.postprocess import NO_CATEGORIES, activate, describe, thresh_sort, top_k

LABELS = [f"c{i}" for i in range(6)]
scores_st = arrays(np.float32, st.integers(1, 50), elements=st.floats(0, 1, width=32))


def test_thresh_sort_is_strict_and_descending():
    scores = np.array([0.2, 0.9, 0.5, 0.7, 0.51], dtype=np.float32)
    assert thresh_sort(scores, 0.5).tolist() == [1, 3, 4]


@given(scores_st, st.floats(0, 1))
def test_thresh_sort_property(scores, threshold):
    picked = thresh_sort(scores, threshold)
    assert set(picked.tolist()) == {i for i, s in enumerate(scores) if s > threshold}
    assert all(scores[a] >= scores[b] for a, b in zip(picked, picked[1:], strict=False))


@given(scores_st, st.integers(1, 10))
def test_top_k_property(scores, k):
    picked = top_k(scores, k)
    assert len(picked) == min(k, len(scores))
    assert scores[picked].tolist() == sorted(scores.tolist(), reverse=True)[: len(picked)]


def test_activations():
    logits = np.array([1.0, 2.0, -3.0], dtype=np.float32)
    assert np.isclose(activate(logits, "softmax").sum(), 1.0)
    assert np.allclose(activate(logits, "sigmoid"), 1 / (1 + np.exp(-logits)))
    assert activate(logits, "none") is logits
    assert np.isfinite(activate(np.array([1000.0, -1000.0]), "softmax")).all()


def test_multilabel_answer_keeps_seed_001_shape():
    scores = np.array([0.1, 0.95, 0.2, 0.6, 0.0, 0.3])
    answer = describe(scores, LABELS, "multilabel", 5, 0.5)
    assert answer["status"] == 1 and answer["result"] == ["c1", "c3"]
    assert answer["predictions"][0] == {"label": "c1", "index": 1, "score": 0.95}


def test_nothing_above_threshold_is_no_categories():
    answer = describe(np.full(6, 0.1), LABELS, "multilabel", 5, 0.5)
    assert answer == {"status": 0, "result": NO_CATEGORIES, "predictions": []}


def test_multiclass_answer_is_top_k():
    answer = describe(np.array([0.05, 0.5, 0.1, 0.3, 0.02, 0.03]), LABELS, "multiclass", 3, 0.5)
    assert answer["result"] == ["c1", "c3", "c2"]


def test_saturated_scores_are_ordered_by_their_logits():
    """Logits above ~17 all give a float32 sigmoid of exactly 1.0: order by the logits then."""
    logits = np.array([21.0, -5.0, 35.0, 25.0, 0.2, 30.0], dtype=np.float32)
    scores = activate(logits, "sigmoid").astype(np.float32)
    assert (scores[[0, 2, 3, 5]] == 1.0).all()  # indistinguishable as scores
    answer = describe(scores, LABELS, "multilabel", 5, 0.5, logits)
    assert [p["index"] for p in answer["predictions"]] == [2, 5, 3, 0, 4]
    assert [p["index"] for p in describe(scores, LABELS, "multilabel", 5, 0.5)["predictions"]] == [0, 2, 3, 5, 4]
    assert list(thresh_sort(scores, 0.5, logits)) == [2, 5, 3, 0, 4]


def test_multiclass_top_k_follows_the_logits_too():
    logits = np.array([40.0, 60.0, 50.0, 0.0, 0.0, 0.0], dtype=np.float32)
    scores = activate(logits, "softmax").astype(np.float32)
    assert [p["index"] for p in describe(scores, LABELS, "multiclass", 3, 0.5, logits)["predictions"]] == [1, 2, 0]
