"""The searchers, one module per method, each registered by one line in :mod:`mobilekit.search.registry`.

Methods and the helper modules only they use:

- :mod:`.single_path`: Single-Path NAS (the superkernel block lives in the engine's :mod:`~mobilekit.search.superkernel`,
  since :class:`~mobilekit.search.supernets.SuperNet` is one of the engine's supernets).
- :mod:`.multipath`: the multi-path (DARTS/FBNet-style) baseline.
- :mod:`.random_search`: random architectures in the latency window, each trained as a proxy trial
  (:mod:`.proxy_trials`, shared with the joint baselines).
- :mod:`.autohas`: AutoHAS, with its hyper-parameter encodings (:mod:`.hyperencoding`).
- :mod:`.joint_random`, :mod:`.joint_tpe`: AutoHAS's multi-trial baselines, sharing :mod:`.joint_trials`.
- :mod:`.spos`: one-shot search with uniformly sampled paths and evolution.
- :mod:`.tnas_os`: one-shot search with the TNAS sampler (:mod:`.tnas_sampler`).
- :mod:`.diffautoml`: DiffAutoML, with its augmentation policy (:mod:`.augment_policy`) and weight-decay
  hyper-gradient (:mod:`.hypergradient`).

Methods import from the engine (``mobilekit.search.*``) and from each other's helpers; the engine never imports a
method (the registry names them as strings).
"""
