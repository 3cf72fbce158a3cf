"""The offline demo: real classifiers fine-tuned from a real base, merged and evaluated.

Submodules do the work (acquisition in ``sources``, data in ``data``, fine-tuning in ``train``);
this package imports nothing so that each can be used on its own.
"""
