"""models: model specs turned into models and their default inputs, for the CLI and CI.

Owns :mod:`~convprof.models.load` (``torchvision:NAME``, ``transformers:NAME``,
``package.module:callable``, with keyword arguments), one module per family
(:mod:`~convprof.models.torchvision`, :mod:`~convprof.models.transformers` with its known
configurations in :mod:`~convprof.models.known`), building on meta
(:mod:`~convprof.models.build`) and making inputs from shapes (:mod:`~convprof.models.inputs`).
May import ``records``, ``report`` (a language model's text shape) and ``units``. The library
(``convprof.profile``) never needs it: it takes a model the caller built.
"""
