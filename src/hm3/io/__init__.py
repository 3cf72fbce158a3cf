"""Shared input/output layer.

Checkpoints, the streaming safetensors writer, atomic output directories (their renames run
with Ctrl-C held, :mod:`hm3.io.signals`), tokenizer files, tables of texts and YAML input.
Imports nothing above it (no model, no stage).
"""
