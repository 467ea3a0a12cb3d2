"""rendering: a report in, a string out; nothing here prints or computes.

Owns :func:`~convprof.rendering.render.render` (table, JSON, CSV, Markdown, HTML), the layer
table's columns and tree (:mod:`~convprof.rendering.columns`), the lines under it
(:mod:`~convprof.rendering.footer`), the blocks table, CSV, diffs, the plot (matplotlib) and
:mod:`~convprof.rendering.tables`, the only module that calls tabulate. Importing it hands the
renderer to the report (``str(report)``). May import ``report``, ``roofline`` and ``units``.
"""
