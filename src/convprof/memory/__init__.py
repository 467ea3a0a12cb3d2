"""memory: peak memory, predicted from the lifetimes of tensor storages.

Owns :mod:`~convprof.memory.lifetimes` (which storages exist at each moment of a pass: the
recorder shows it every operator's outputs), :mod:`~convprof.memory.scratch` (CPU kernels'
own scratch), :mod:`~convprof.memory.peak` (a lifetime trace -> the peak, its categories, each
call's peak), :mod:`~convprof.memory.optimizers` (an optimizer's state and update on meta) and
:mod:`~convprof.memory.fit` (the largest batch that fits). May import ``records``, ``report``
and ``units``; it touches no hooks and no dispatch mode (``record`` does).
"""
