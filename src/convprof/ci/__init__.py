"""ci: holding numbers in CI: budgets, the pyproject configuration, baselines, the pytest plugin.

Owns :mod:`~convprof.ci.budget` (``assert_budget``, limits on totals and layers),
:mod:`~convprof.ci.config` (``[[tool.convprof.models]]`` entries), :mod:`~convprof.ci.baseline`
(recorded reports to compare with) and :mod:`~convprof.ci.plugin` (the ``pytest11`` entry
point, which pytest loads in every session: it must not import torch). May import ``api``
(on first use), ``report``, ``rendering``, ``models`` (input shapes), ``parallel.plan`` (a
budget's plan, checked when read), ``records`` and ``units``.
"""
