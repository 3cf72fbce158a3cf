"""Shared input/output layer.

Checkpoints, the streaming safetensors writer, atomic output directories, tokenizer files,
tables of texts and YAML input. Imports nothing above it (no model, no stage).
"""
