"""The datasets warmtune knows by name: where each comes from and what it must hash to.

Every entry says what warmtune stores in the data directory (paths relative to it, each
with its SHA-256 and size where known), the canonical public source, the licence and the
citation. Three ways to get the stored files exist, tried in this order by
:func:`warmtune.data.fetch`:

1. a mirror (``--mirror URL`` or ``$WARMTUNE_DATA_MIRROR``): any server holding a data
   directory's layout, so ``MIRROR/yahpo/lcbench/model.onnx``; works for every entry;
2. each file's own public URL (YAHPO Gym: GitHub raw at a pinned commit);
3. public *sources* plus a converter, where the public format is not the stored one
   (Omniglot: two zips of PNGs, checked by their git blob ids, become two ``.npz``).

An entry with none of these (the NAS-Bench-201 table, the KubeRay CRDs) can only be
imported from a folder or a mirror; it says why in its ``notes``.

Checksums come from ``yahpo-v1.0.2.tsv`` (the SHA-256 of every file of the public
``yahpo_data`` repository at v1.0.2, as far as its content could be read) and from the
reference copies the project tests against. Ten YAHPO ``model.onnx`` files have no known
hash; :func:`warmtune.data.fetch` records the SHA-256 of what it downloaded so that
``verify`` can still catch later corruption, and says that it did.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

__all__ = [
    "YAHPO_COMMIT",
    "DataFile",
    "Dataset",
    "Source",
    "UnknownDatasetError",
    "all_datasets",
    "get_dataset",
]

YAHPO_REPOSITORY = "https://github.com/slds-lmu/yahpo_data"
YAHPO_COMMIT = "efdab9072f63bd680396cd4b78b927c4a0caaad3"
"""The commit of ``slds-lmu/yahpo_data`` that is release v1.0.2 (what yahpo-gym 1.0.2 reads)."""

_YAHPO_RAW = f"https://raw.githubusercontent.com/slds-lmu/yahpo_data/{YAHPO_COMMIT}"
_YAHPO_STORED = (
    "config_space.json",
    "encoding.json",
    "model.onnx",
    "best_params_resnet.json",
    "LICENSE-2.0.txt",
    "README.txt",
)
"""Files of a scenario folder warmtune keeps: what the loader reads, the surrogate's
training setup, and the original data's licence where the folder has one. ``param_set.R``
is for the R package only."""

_OMNIGLOT_RAW = "https://raw.githubusercontent.com/brendenlake/omniglot/master/python"
# SHA-256 of the arrays (the .npy members) of the reference Omniglot .npz files.
_BG_IMAGES = "1be21be81c2f72a1aca58b49c9e63fe7c77f3a2cdfd09d50870753730ccc686d"
_BG_LABELS = "894f7729cc14c16a3e0db7366a5df3226fbeec4945bec987d346465d624cb77b"
_EV_IMAGES = "20d7d7cd314cd76c738efc28728383561a06f4b4e455e75ca7c9d28ecee2ce4b"
_EV_LABELS = "ad33faba95523dbf3bbe60217b5d916b14381ef7a92da4d82050c142198708c0"


class UnknownDatasetError(ValueError):
    """A name that is not in the registry; the message lists the known names."""


@dataclass(frozen=True)
class DataFile:
    """One stored file.

    Attributes:
        path: Relative to the data directory, with ``/`` (``yahpo/lcbench/model.onnx``).
        sha256: Its SHA-256, or ``None`` where no trustworthy hash is known.
        size: Its size in bytes, or ``None`` when unknown.
        url: Its public URL, or ``None`` when it is made by a converter or has no
            public download.
        npz_sha256: For a converted ``.npz``: the SHA-256 of each array member. The zip
            container differs between zip writers (Python versions); the arrays may
            not, so a converted file passes ``verify`` when its arrays match.
    """

    path: str
    sha256: str | None
    size: int | None = None
    url: str | None = None
    npz_sha256: Mapping[str, str] | None = None

    @property
    def name(self) -> str:
        """The file name without its folder."""
        return self.path.rsplit("/", 1)[-1]


@dataclass(frozen=True)
class Source:
    """A public download that a converter turns into stored files (it is not kept).

    Attributes:
        filename: Name the converter receives it under.
        url: Where it is published.
        git_blob: Its git blob id (``git hash-object FILE``) where the publisher is a git
            repository; pins its content like a checksum.
        sha256: Its SHA-256, where known.
    """

    filename: str
    url: str
    git_blob: str | None = None
    sha256: str | None = None


Converter = Callable[[Mapping[str, Path], Path], None]
"""``convert(sources, out_dir)``: downloaded sources by filename -> stored files in
``out_dir`` (named as the dataset's files, relative to the dataset's folder)."""


@dataclass(frozen=True)
class Dataset:
    """A dataset warmtune can fetch, import and verify by name.

    Attributes:
        name: What job files and commands call it (``lcbench``, ``omniglot``, ``nb201``).
        kind: ``yahpo`` (a YAHPO Gym scenario), ``omniglot``, ``nb201`` or ``reference``
            (data only the tests read).
        folder: Its folder, relative to the data directory.
        title: One line: what it is.
        files: What warmtune stores.
        source: The canonical public source, in words with its address.
        licence: The licence of the data.
        citation: What to cite.
        sources: Public downloads a converter turns into ``files``.
        convert: That converter.
        notes: What a user should know: unknown hashes, no public download, provenance.
    """

    name: str
    kind: str
    folder: str
    title: str
    files: tuple[DataFile, ...]
    source: str
    licence: str
    citation: str
    sources: tuple[Source, ...] = ()
    convert: Converter | None = field(default=None, compare=False)
    notes: tuple[str, ...] = ()

    @property
    def downloadable(self) -> bool:
        """Whether ``warmtune data fetch`` can get it from a public source (no mirror)."""
        return bool(self.sources and self.convert) or all(f.url for f in self.files)

    @property
    def size(self) -> int | None:
        """Bytes stored, or ``None`` when a file's size is unknown."""
        sizes = [f.size for f in self.files]
        return None if any(s is None for s in sizes) else sum(s for s in sizes if s)

    @property
    def known_size(self) -> int:
        """Bytes stored by the files whose size is known."""
        return sum(f.size or 0 for f in self.files)

    @property
    def unpinned(self) -> tuple[DataFile, ...]:
        """Files without a known SHA-256."""
        return tuple(f for f in self.files if f.sha256 is None and f.npz_sha256 is None)


def _yahpo_manifest() -> dict[str, tuple[str | None, int | None]]:
    """``path -> (sha256 or None, size or None)`` from the shipped v1.0.2 manifest."""
    text = resources.files("warmtune.data").joinpath("yahpo-v1.0.2.tsv").read_text()
    rows: dict[str, tuple[str | None, int | None]] = {}
    for line in text.splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        sha, size, path = line.split("\t")
        rows[path] = (None if sha == "-" else sha, None if size == "-" else int(size))
    return rows


_YAHPO_ORIGINS = {
    "lcbench": (
        "LCBench (Zimmer et al. 2021): 34 OpenML tasks, a funnel-shaped MLP, fidelity epoch",
        "Zimmer, Lindauer, Hutter: Auto-PyTorch Tabular: Multi-Fidelity MetaLearning for "
        "Efficient and Robust AutoDL. IEEE TPAMI 2021",
    ),
    "nb301": (
        "NAS-Bench-301 (Siems et al. 2020): DARTS cells on CIFAR-10, fidelity epoch",
        "Siems, Zimmer, Zela, Lukasik, Keuper, Hutter: NAS-Bench-301 and the Case for "
        "Surrogate Benchmarks for Neural Architecture Search. arXiv:2008.09777",
    ),
    "rbv2": (
        "rbv2 (Binder et al. 2020): an mlr3 learner on OpenML tasks, fidelities trainsize and repl",
        "Binder, Pfisterer, Bischl: Collecting Empirical Data About Hyperparameters for Data "
        "Driven AutoML. AutoML Workshop at ICML 2020",
    ),
    "iaml": (
        "iaml (YAHPO Gym): an mlr3 learner on 4 OpenML datasets with interpretability "
        "measures, fidelity trainsize",
        "",
    ),
}
_YAHPO_CITATION = (
    "Pfisterer, Schneider, Moosbauer, Binder, Bischl: YAHPO Gym - An Efficient "
    "Multi-Objective Multi-Fidelity Benchmark for Hyperparameter Optimization. "
    "AutoML-Conf 2022"
)


def _yahpo(name: str, manifest: Mapping[str, tuple[str | None, int | None]]) -> Dataset:
    files = []
    for stored in _YAHPO_STORED:
        path = f"{name}/{stored}"
        if path not in manifest:
            continue
        sha, size = manifest[path]
        files.append(DataFile(f"yahpo/{path}", sha, size, f"{_YAHPO_RAW}/{path}"))
    family = name if name in _YAHPO_ORIGINS else name.split("_")[0]
    what, original = _YAHPO_ORIGINS[family]
    notes = [
        f"YAHPO Gym v1.0.2 surrogate: {YAHPO_REPOSITORY} at commit {YAHPO_COMMIT[:7]} "
        f"(release v1.0.2), folder {name}/."
    ]
    if any(f.sha256 is None for f in files):
        notes.append(
            "The SHA-256 of its model.onnx is not known to warmtune (it could not be read "
            "when the manifest was made). `fetch` downloads it unverified and records the "
            "hash it got, so `verify` can catch later corruption; compare that hash with a "
            "copy you trust."
        )
    return Dataset(
        name=name,
        kind="yahpo",
        folder=f"yahpo/{name}",
        title=f"YAHPO Gym {name}: {what}",
        files=tuple(files),
        source=f"{YAHPO_REPOSITORY} (v1.0.2, commit {YAHPO_COMMIT})",
        licence="Apache-2.0 (yahpo_data's LICENSE; lcbench and nb301 also ship the "
        "original data's LICENSE-2.0.txt)",
        citation="; ".join(c for c in (_YAHPO_CITATION, original) if c),
        notes=tuple(notes),
    )


def _convert_omniglot(sources: Mapping[str, Path], out_dir: Path) -> None:
    from .convert import omniglot_zip_to_npz

    for part in ("images_background", "images_evaluation"):
        omniglot_zip_to_npz(sources[f"{part}.zip"], out_dir / f"{part}.npz")


def _omniglot() -> Dataset:
    return Dataset(
        name="omniglot",
        kind="omniglot",
        folder="omniglot",
        title="Omniglot: 1,623 handwritten characters from 50 alphabets, 20 drawings each",
        files=(
            DataFile(
                "omniglot/images_background.npz",
                "8bf84167413cd00beacdce3fe582f780ab538d8dbef043a6d688f2527bbce199",
                3340794,
                npz_sha256={
                    "images.npy": _BG_IMAGES,
                    "labels.npy": _BG_LABELS,
                },
            ),
            DataFile(
                "omniglot/images_evaluation.npz",
                "0b84c7ffd94c4841c0040e529c86a82eaaccb986d8eadad5673f7991b7475276",
                2415269,
                npz_sha256={
                    "images.npy": _EV_IMAGES,
                    "labels.npy": _EV_LABELS,
                },
            ),
        ),
        sources=(
            Source(
                "images_background.zip",
                f"{_OMNIGLOT_RAW}/images_background.zip",
                git_blob="71fd167eb6fdd312049395fbd247147a4b234231",
            ),
            Source(
                "images_evaluation.zip",
                f"{_OMNIGLOT_RAW}/images_evaluation.zip",
                git_blob="8ccde0ed1565641f1fa8c57cdc6ff634e15fc5c1",
            ),
        ),
        convert=_convert_omniglot,
        source="https://github.com/brendenlake/omniglot, python/images_background.zip and "
        "python/images_evaluation.zip (PNG per drawing, folders alphabet/character)",
        licence="MIT",
        citation="Lake, Salakhutdinov, Tenenbaum: Human-level concept learning through "
        "probabilistic program induction. Science 350(6266), 2015",
        notes=(
            "The zips are checked by their git blob ids at commit 057f034 of "
            "brendenlake/omniglot (torchvision downloads the same zips and checks their "
            "MD5), then converted: bool images [characters, 20, 105, 105], True = white "
            "background, characters in official id order (the number in the file names), "
            "drawers 1..20 in order. The arrays must hash to the reference's.",
        ),
    )


def _nb201() -> Dataset:
    return Dataset(
        name="nb201",
        kind="nb201",
        folder="nas-bench-201",
        title="NAS-Bench-201 table: 200-epoch test accuracy of all 15,625 cells on "
        "CIFAR-10, CIFAR-100 and ImageNet16-120",
        files=(
            DataFile(
                "nas-bench-201/nats_bench.csv",
                "cb5d777ec3368be83c8f9b3aa4d520696051cb0eb8d94b8f85b519f9ea4afa3e",
                3024008,
            ),
        ),
        source="NATS-Bench, topology search space (https://github.com/D-X-Y/NATS-Bench); "
        "the table is derived from it with the nats_bench API",
        licence="MIT (NATS-Bench), which allows redistributing the derived table",
        citation="Dong, Yang: NAS-Bench-201: Extending the Scope of Reproducible Neural "
        "Architecture Search. ICLR 2020; Dong, Liu, Musial, Gabrys: NATS-Bench: "
        "Benchmarking NAS Algorithms for Architecture Topology and Size. IEEE TPAMI 2021",
        notes=(
            "This CSV has no official download: it is derived from the NATS-Bench release "
            "(create(None, 'tss', fast_mode=True), then get_more_info(i, dataset, hp=200, "
            "is_random=False)['test-accuracy'] for all 15,625 cells; docs/data.md has the "
            "script). `fetch` can get it only from a mirror; otherwise import it from a "
            "folder: `warmtune data import nb201 --from DIR`.",
        ),
    )


def _kuberay_crds() -> Dataset:
    return Dataset(
        name="kuberay-crds",
        kind="reference",
        folder="kuberay-crds",
        title="KubeRay CustomResourceDefinitions (RayCluster, RayJob), for validating the "
        "manifests in cluster/kuberay/ offline",
        files=(
            DataFile(
                "kuberay-crds/ray.io_rayclusters.yaml",
                "c44704442eef0c6721ad40c1d66782c8bd3fdab9d3344306a5820910a679baa1",
                933800,
            ),
            DataFile(
                "kuberay-crds/ray.io_rayjobs.yaml",
                "01a5cf3b17c1769fda44af7e82debcd98722f0c27b9ab84d084681c6649121f5",
                1390040,
            ),
            DataFile(
                "kuberay-crds/LICENSE",
                "24a918b9cf6d1d0aa84f17384038bedbccdd51e815afdd9d1b49b13d4a7dd6d9",
                14852,
            ),
        ),
        source="https://github.com/ray-project/kuberay, ray-operator/config/crd/bases "
        "(v1.7.0-rc.0+5)",
        licence="Apache-2.0",
        citation="",
        notes=(
            "Only the tests read it. The exact upstream commit of this copy is not recorded, "
            "so no URL is pinned: import it from a folder or fetch it from a mirror.",
        ),
    )


@functools.lru_cache(maxsize=1)
def _registry() -> dict[str, Dataset]:
    manifest = _yahpo_manifest()
    # Every folder of yahpo_data with a surrogate is a scenario (the same 14 that
    # yahpo-gym 1.0.2 registers; a test holds the two lists together).
    scenarios = sorted(p.split("/")[0] for p in manifest if p.endswith("/model.onnx"))
    entries = [_yahpo(name, manifest) for name in scenarios]
    entries += [_omniglot(), _nb201(), _kuberay_crds()]
    return {d.name: d for d in entries}


def all_datasets() -> list[Dataset]:
    """Every registered dataset, YAHPO scenarios first, in registry order."""
    return list(_registry().values())


def get_dataset(name: str) -> Dataset:
    """The registry entry called ``name``.

    Raises:
        UnknownDatasetError: ``name`` is not registered; the message lists the names.
    """
    try:
        return _registry()[name]
    except KeyError:
        raise UnknownDatasetError(
            f"unknown dataset {name!r}; known: {', '.join(_registry())} "
            "(`warmtune data list` describes them)"
        ) from None
