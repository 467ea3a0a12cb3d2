"""record: the only package that touches PyTorch's machinery; one pass of a model -> a Trace.

Owns :func:`~convprof.record.recorder.record` and its rooms: the session (module hooks and a
dispatch mode, a frame per call), zero compute and its stand-ins (``stand_ins/``), function
modes (attention kernels, autocast, composite functions), the backward pass, module facts,
data flow, the memory wiring, putting the model back (``state``), the autocast policy, and
timing (``timing.measure``, which also hooks modules). May import ``records``, ``units``,
``report`` (timings), ``memory`` (lifetimes it feeds) and ``count.formulas`` (the registry
says which operators are free and which modules quiet), never the counter.
"""
