"""The head-alignment stage.

Each task's head rows re-fitted in closed form to its original's logits on unlabeled texts (and,
optionally, the body's task vector scaled).
"""
