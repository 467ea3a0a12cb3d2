"""report: the frozen results of a profile, numbers only, and their JSON form.

Owns :class:`Report` and its parts: ``rows`` (layers, totals, blocks, sizes), ``memory`` (the
peak), ``timing`` (measured times), ``ranks`` (a distributed step's rank classes), ``tokens``
(a language model's per-token figures), ``diff`` (what changed between two reports). Imports
``records`` and ``units`` only: no torch, no tabulate, no rendering (see
:mod:`convprof.report.results` for how a report renders itself).
"""

from convprof.report.memory import CATEGORIES, MEMORY_CONVENTION, OPTIMIZERS, Memory
from convprof.report.ranks import Collective, RankClass
from convprof.report.results import Report, rendered_by, rolled_name
from convprof.report.rows import Block, Layer, Sizes, Totals, Unexplained, intensity
from convprof.report.schema import CONVENTION, SCHEMA
from convprof.report.timing import LayerTime, Timing

__all__ = [
    "CATEGORIES",
    "CONVENTION",
    "MEMORY_CONVENTION",
    "OPTIMIZERS",
    "SCHEMA",
    "Block",
    "Collective",
    "Layer",
    "LayerTime",
    "Memory",
    "RankClass",
    "Report",
    "Sizes",
    "Timing",
    "Totals",
    "Unexplained",
    "intensity",
    "rendered_by",
    "rolled_name",
]
