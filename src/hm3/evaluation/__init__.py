"""The evaluation stage.

Suite files, predictions, metrics, the paired bootstrap, results.json, the report and its plots.
"""
