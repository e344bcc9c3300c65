"""Evaluation protocols: k-NN, linear probe on frozen features."""

from selfsup.eval.features import extract_features
from selfsup.eval.knn import knn_accuracy, knn_predict, knn_scores
from selfsup.eval.linear import linear_probe

__all__ = ["extract_features", "knn_accuracy", "knn_predict", "knn_scores", "linear_probe"]
