"""Postprocessing: one row of model outputs -> the JSON answer for one image.

- multiclass: softmax, then the top-k classes (TorchServe's image_classifier does the same).
- multilabel: an independent sigmoid per class, then every class scoring above THRESHOLD,
  highest first (`thresh_sort`). With `ACTIVATION=none` the raw outputs are thresholded, as
  seed 001 did; that only makes sense if the model was trained with that cut-off in mind.
With no class above the threshold the answer is seed 001's `"No Categories"` with status 0.
"""

from __future__ import annotations

import json
import math

import numpy as np

NO_CATEGORIES = "No Categories"


def activate(logits: np.ndarray, activation: str) -> np.ndarray:
    """Apply the activation to one row of float32 logits."""
    if activation == "softmax":
        shifted = np.exp(logits - logits.max())
        return shifted / shifted.sum()
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-logits))
    return logits


def top_k(order: np.ndarray, k: int) -> np.ndarray:
    """The k best indices, best first, by `order` (the logits: see thresh_sort)."""
    k = min(k, order.size)
    idx = np.argpartition(-order, k - 1)[:k]
    return idx[np.argsort(-order[idx], kind="stable")]


def thresh_sort(scores: np.ndarray, threshold: float, order: np.ndarray | None = None) -> np.ndarray:
    """Indices of scores strictly above `threshold`, best first by `order`.

    Pass the logits as `order`: sigmoid and softmax keep their order, but a confident model's
    sigmoid rounds to exactly 1.0 in float32 (any logit above ~17), and ties among the scores
    would fall back to class index order, which reads as arbitrary.
    """
    order = scores if order is None else order
    (idx,) = np.nonzero(scores > threshold)
    return idx[np.argsort(-order[idx], kind="stable")]


def describe(scores: np.ndarray, labels: list[str], task: str, k: int, threshold: float, logits=None) -> dict:
    """The per-image answer: seed 001's `result`/`status` plus scored predictions."""
    order = scores if logits is None else logits
    picked = top_k(order, k) if task == "multiclass" else thresh_sort(scores, threshold, order)
    predictions = [{"label": labels[i], "index": int(i), "score": float(scores[i])} for i in picked]
    if not predictions:
        return {"status": 0, "result": NO_CATEGORIES, "predictions": []}
    return {"status": 1, "result": [p["label"] for p in predictions], "predictions": predictions}


def _no_constant(name: str):
    raise ValueError(f"{name} is not a score")


def valid_answer(raw: bytes, labels: list[str], top_k: int | None) -> dict | None:
    """`raw` parsed as JSON, if it is an answer `describe` could have given for this model
    (labels by index, finite scores, at most `top_k` predictions for multiclass); else None.

    For values read back from a shared store (the result cache), which other programs can write.
    """
    try:
        answer = json.loads(raw, parse_constant=_no_constant)
    except ValueError:  # bad JSON, NaN/Infinity, or not UTF-8 (a pickle starts with 0x80)
        return None
    if not isinstance(answer, dict) or set(answer) != {"status", "result", "predictions"}:
        return None
    predictions = answer["predictions"]
    if not isinstance(predictions, list) or (top_k is not None and len(predictions) > top_k):
        return None
    names = []
    for p in predictions:
        if not isinstance(p, dict) or set(p) != {"label", "index", "score"}:
            return None
        index, score = p["index"], p["score"]
        if type(index) is not int or not 0 <= index < len(labels) or labels[index] != p["label"]:
            return None
        if type(score) is not float or not math.isfinite(score):
            return None
        names.append(p["label"])
    expected = (1, names) if names else (0, NO_CATEGORIES)
    return answer if (answer["status"], answer["result"]) == expected else None
