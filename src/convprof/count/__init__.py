"""count: records in, a report out; plain arithmetic, no torch machinery, no formatting.

Owns the counting rule (:mod:`~convprof.count.counter`: rows, totals, what nothing explains),
the formulas in a registry keyed by module type and operator (:mod:`~convprof.count.formulas`,
one file per family; :func:`~convprof.count.formulas.register` is public), and the separable
blocks found from the data flow (:mod:`~convprof.count.blocks`). May import ``records``,
``report``, ``units`` and ``memory`` (the peak's summary); ``formulas`` only ``records``.
"""
