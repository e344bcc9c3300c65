"""Clustering of features: k-means for pseudo-labels."""

from selfsup.cluster.kmeans import KMeansResult, kmeans, kmeans_fit, nearest_centroids

__all__ = ["KMeansResult", "kmeans", "kmeans_fit", "nearest_centroids"]
