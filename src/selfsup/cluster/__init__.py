"""Clustering of features: k-means for pseudo-labels."""

from selfsup.cluster.kmeans import KMeansResult, kmeans, kmeans_fit

__all__ = ["KMeansResult", "kmeans", "kmeans_fit"]
