"""Shared model layer.

Tasks and labels, architectures, the classifier used for inference (softmax per task segment),
the merged model's features, and HM3's head expansion (Algorithm 1).
"""
