"""Model search (the paper's Algorithm 3): merge, score, keep the best — in memory, via Optuna.

Modules: :mod:`~hm3.search.space` (the ``search:`` block), :mod:`~hm3.search.trial` (a trial's
values and config), :mod:`~hm3.search.engine` (inputs read once, one live model),
:mod:`~hm3.search.data` (samples and scores), :mod:`~hm3.search.objective` (one trial),
:mod:`~hm3.search.pruning` (``--prune``: stop a trial clearly behind the best),
:mod:`~hm3.search.study` (Optuna storage, samplers), :mod:`~hm3.search.inputs` (the
options, checked; recipe and samples), :mod:`~hm3.search.outputs` (``trials.csv``, plots,
``best/``) and :mod:`~hm3.search.run` (:func:`search`). Importing this
package imports none of them (``hm3 --help`` stays fast).
"""
