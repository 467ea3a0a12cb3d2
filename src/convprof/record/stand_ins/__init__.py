"""Zero compute's stand-ins: the outputs of operators and built-in layers made from shapes.

``operators`` and ``backward`` stand in for the hot ATen operators whose meta kernels are slow
Python decompositions; ``modules`` for the forward of quiet built-in layers; ``values`` keeps
real what steers control flow (lengths, masks, small integer tables); ``attention`` runs the
attention kernel the target device would choose. Each returns None for a call it is not sure
of, and PyTorch's own meta kernel runs instead. Imports torch and ``shapes`` only.
"""
