"""Tabular and surrogate benchmarks: YAHPO Gym scenarios and NAS-Bench-201.

Loaders take a path (nothing downloads at run time):

* :class:`~warmtune.trainables.benchmarks.yahpo.YahpoScenario`: any YAHPO Gym v1.0.2
  scenario folder, evaluated in batches with onnxruntime (``pip install warmtune[bench]``).
* :class:`~warmtune.trainables.benchmarks.nb201.NB201Table`: the NAS-Bench-201 table.
* :mod:`~warmtune.trainables.benchmarks.trainable`: Ray Tune function trainables over both.

Submodules import their heavy dependencies (onnxruntime, ConfigSpace, Ray) only
when used, so importing this package stays cheap.
"""
