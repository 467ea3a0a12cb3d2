"""parallel: will it train on N GPUs: one training step per class of ranks of a parallel plan.

Owns the plan (``plan``: dimensions pp, dp, fsdp, tp, ep and the step's options), the fake world
(``world``: PyTorch's fake process group and a device mesh for one rank), applying the plan
with PyTorch's own FSDP2 and tensor parallelism to a meta copy of the model (``copy``,
``shard``), a pipeline's stages and schedule (``pipeline``), a mixture of experts' expert
parallelism (``experts``), a transformers model's inputs in a
fake step (``inputs``: what fake tensors cannot tell it about its masks, its cache under
checkpointing), the rank classes (``ranks``) and the run of each class (``run``), which records
the step through :mod:`convprof.record.step` and counts it. May import ``record``, ``count``,
``memory``, ``report``, ``records`` and ``units``; ``api`` and the CLI import it.
"""
