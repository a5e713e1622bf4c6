"""Postprocessing: one row of model outputs -> the JSON answer for one image.

- multiclass: softmax, then the top-k classes (TorchServe's image_classifier does the same).
- multilabel: an independent sigmoid per class, then every class scoring above THRESHOLD,
  highest first (`thresh_sort`). With `ACTIVATION=none` the raw outputs are thresholded, as
  seed 001 did; that only makes sense if the model was trained with that cut-off in mind.
With no class above the threshold the answer is seed 001's `"No Categories"` with status 0.
"""

from __future__ import annotations

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


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.size)
    idx = np.argpartition(-scores, k - 1)[:k]
    return idx[np.argsort(-scores[idx], kind="stable")]


def thresh_sort(scores: np.ndarray, threshold: float) -> np.ndarray:
    """Indices of scores strictly above `threshold`, highest score first."""
    (idx,) = np.nonzero(scores > threshold)
    return idx[np.argsort(-scores[idx], kind="stable")]


def describe(scores: np.ndarray, labels: list[str], task: str, k: int, threshold: float) -> dict:
    """The per-image answer: seed 001's `result`/`status` plus scored predictions."""
    picked = top_k(scores, k) if task == "multiclass" else thresh_sort(scores, threshold)
    predictions = [{"label": labels[i], "index": int(i), "score": float(scores[i])} for i in picked]
    if not predictions:
        return {"status": 0, "result": NO_CATEGORIES, "predictions": []}
    return {"status": 1, "result": [p["label"] for p in predictions], "predictions": predictions}
