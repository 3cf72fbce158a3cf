"""The merge stage.

The merge config, the plan of tensors, the streaming merge to disk, RegMean's statistics, the
model card and ``hm3 expand``.
"""
