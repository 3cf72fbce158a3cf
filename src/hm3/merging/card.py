"""The ``README.md`` model card of a merged checkpoint: what it answers and how it was made.

Renders markdown from a :class:`~hm3.merging.plan.MergePlan`, listing the plan's warnings (such
as the note on tensors the base lacks) under Notes; writes nothing itself.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from hm3.methods import METHODS
from hm3.version import __version__

if TYPE_CHECKING:
    from hm3.merging.config import MergeConfig
    from hm3.merging.plan import MergePlan


def render_card(plan: MergePlan, dtype: str, *, title: str = "HM3-merged classifier") -> str:
    """Markdown for the model card: tasks and labels, recipe, how to use, caveats."""
    config = plan.config
    rows = "\n".join(
        f"| `{t.name}` | {', '.join(f'`{label}`' for label in t.labels)} | {t.start}–{t.end - 1} "
        f"| `{t.source}` |"
        for t in plan.tasks
    )
    notes = "\n".join(f"- {w}" for w in plan.warnings) or "- none"
    tasks = f"{len(plan.tasks)} task{'' if len(plan.tasks) == 1 else 's'}"
    return f"""---
library_name: transformers
pipeline_tag: text-classification
tags: [hm3, model-merging, {config.merge_method}]
---

# {title}

One classifier that answers {tasks} in one forward pass. It was made without
training by [hm3](https://arxiv.org/abs/2409.19173) {__version__}: each model's label
projection was zero-padded to the concatenated label space (HM3, Algorithm 1) and the
models were merged with `{config.merge_method}` {_onto(config)}.

| task | labels | logits | source |
|---|---|---|---|
{rows}

**Read the logits per task.** Apply a softmax to each task's segment separately (HM3, eq. 6),
never across the whole output:

```python
import hm3
clf = hm3.load("path/to/this/model")
clf.predict(["some text"])  # per text, per task: label and probabilities
```

With plain transformers, `AutoModelForSequenceClassification.from_pretrained` loads this
directory unchanged; the task segments are in `config.json` under `hm3.tasks`.

## Recipe

```yaml
{config.to_yaml().rstrip()}
```

Output dtype: `{dtype}`. Architecture: `{plan.arch.model_type}`.

## Notes

{notes}
"""


def _onto(config: MergeConfig) -> str:
    if METHODS[config.merge_method].uses_base:
        return f"onto the base `{config.base_model}`"
    return f"(it reads no base model; base given: `{config.base_model}`)"
