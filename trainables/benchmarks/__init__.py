"""Tabular and surrogate benchmarks: YAHPO Gym scenarios and NAS-Bench-201.

Loaders take a path or a dataset's name, found in the data directory (nothing
downloads at run time; ``warmtune data fetch NAME`` does, once):

* :class:`~warmtune.trainables.benchmarks.yahpo.YahpoScenario`: any YAHPO Gym v1.0.2
  scenario (``"lcbench"`` or its folder), evaluated in batches with onnxruntime
  (``pip install warmtune[bench]``).
* :class:`~warmtune.trainables.benchmarks.nb201.NB201Table`: the NAS-Bench-201 table
  (``"nb201"`` or the CSV).
* :mod:`~warmtune.trainables.benchmarks.trainable`: Ray Tune function trainables over both.

Submodules import their heavy dependencies (onnxruntime, ConfigSpace, Ray) only
when used, so importing this package stays cheap.
"""
