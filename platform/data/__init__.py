"""Datasets by name: the registry, the data directory, fetch, import and verify.

warmtune's real data (YAHPO Gym surrogates, Omniglot, the NAS-Bench-201 table) lives in
one data directory, ``$WARMTUNE_DATA`` or else ``~/.cache/warmtune/data``, one folder per
dataset. Job files, loaders, ``warmtune bench`` and the tests find a dataset by name::

    from warmtune import data

    data.data_dir()                 # the data directory
    data.dataset_path("lcbench")    # DATA/yahpo/lcbench, present or not
    data.require("lcbench")         # the same, or DatasetMissingError naming the fix
    data.fetch("lcbench")           # download, check its SHA-256, rename into place
    data.import_dataset("nb201", "/mnt/team/data")   # copy from a folder, checked
    data.verify("omniglot")         # re-check the checksums

The command line is ``warmtune data list|fetch|verify|path|import``.
"""

from .checks import FileCheck, git_blob_id, sha256_file
from .fetch import DataError, fetch, import_dataset, mirror_url, verify
from .location import (
    DEFAULT_DATA_DIR,
    DatasetMissingError,
    data_dir,
    dataset_path,
    how_to_get,
    is_dataset_name,
    is_present,
    names,
    require,
    resolve,
)
from .registry import DataFile, Dataset, Source, UnknownDatasetError, all_datasets, get_dataset

__all__ = [
    "DEFAULT_DATA_DIR",
    "DataError",
    "DataFile",
    "Dataset",
    "DatasetMissingError",
    "FileCheck",
    "Source",
    "UnknownDatasetError",
    "all_datasets",
    "data_dir",
    "dataset_path",
    "fetch",
    "get_dataset",
    "git_blob_id",
    "how_to_get",
    "import_dataset",
    "is_dataset_name",
    "is_present",
    "mirror_url",
    "names",
    "require",
    "resolve",
    "sha256_file",
    "verify",
]
