"""``warmtune data ...``: list, fetch, verify, locate and import the datasets warmtune uses.

The main command line registers the group with ``main.add_command(data)``.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import NoReturn

import click

__all__ = ["data"]

_DATA_DIR_HELP = "Data directory (default: $WARMTUNE_DATA, else ~/.cache/warmtune/data)."

data_dir_option = click.option(
    "--data-dir",
    "root",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help=_DATA_DIR_HELP,
)


def _fail(message: str, code: int = 1) -> NoReturn:
    click.echo(f"warmtune: error: {message}", err=True)
    sys.exit(code)


def _check_names(names: tuple[str, ...]) -> None:
    from warmtune.data import UnknownDatasetError, get_dataset

    for name in names:
        try:
            get_dataset(name)
        except UnknownDatasetError as e:
            _fail(str(e), code=2)


def _mb(size: int | None) -> str:
    if size is None:
        return "unknown"
    return f"{size / 1e6:.1f} MB"


@click.group()
def data() -> None:
    """The datasets warmtune uses, by name, in one data directory.

    \b
      warmtune data list                       # every dataset, and which are here
      warmtune data fetch lcbench omniglot     # download, check SHA-256, convert
      warmtune data import nb201 --from DIR    # copy from a folder (offline, shared drive)
      warmtune data verify                     # re-check the checksums of what is here
      warmtune data path lcbench               # where a dataset lives

    Job files name datasets (scenario: lcbench, data: omniglot, path: nb201); they
    resolve in the data directory: $WARMTUNE_DATA, else ~/.cache/warmtune/data.
    """


@data.command("list")
@click.option("--long", "-l", "long_", is_flag=True, help="Also source, licence, citation, files.")
@data_dir_option
def list_(long_: bool, root: Path | None) -> None:
    """List the datasets: kind, size, whether they are here (not hashed), how to get them."""
    from warmtune.data import all_datasets, data_dir

    base = data_dir(root)
    click.echo(f"data directory: {base}")
    rows = [("NAME", "KIND", "SIZE", "HERE", "GET")]
    for d in all_datasets():
        present = sum((base / f.path).is_file() for f in d.files)
        status = "yes" if present == len(d.files) else "no" if not present else "partial"
        get = "fetch" if d.downloadable else "import"
        if d.sources:
            get = "fetch+convert"
        rows.append((d.name, d.kind, _mb(d.size), status, get))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    click.echo(
        "\nGET import: no public download; `warmtune data import NAME --from DIR`, or fetch "
        "from a mirror with --mirror.\nHERE checks that the files exist; `warmtune data "
        "verify` checks their SHA-256. `--long` gives sources, licences and checksums."
    )
    if long_:
        for d in all_datasets():
            click.echo(f"\n{d.name}: {d.title}")
            click.echo(f"  folder:   {base / d.folder}")
            click.echo(f"  source:   {d.source}")
            click.echo(f"  licence:  {d.licence}")
            if d.citation:
                click.echo(f"  cite:     {d.citation}")
            for s in d.sources:
                pin = f"git blob {s.git_blob}" if s.git_blob else f"sha256 {s.sha256}"
                click.echo(f"  download: {s.url} ({pin})")
            for f in d.files:
                sha = f.sha256 or "not published"
                size = f"{f.size:,} B" if f.size is not None else "size unknown"
                click.echo(f"  file:     {f.path} ({size}, sha256 {sha})")
            for note in d.notes:
                click.echo(f"  note:     {note}")


@data.command()
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--mirror",
    metavar="URL",
    default=None,
    help="Fetch from a mirror with the data directory's layout (http(s):// or file://; "
    "default: $WARMTUNE_DATA_MIRROR).",
)
@click.option("--quiet", is_flag=True, help="No progress bars or progress lines.")
@data_dir_option
def fetch(names: tuple[str, ...], mirror: str | None, quiet: bool, root: Path | None) -> None:
    """Download datasets from their public source, check their SHA-256, convert.

    Every file is downloaded under a temporary name, checked, and only then renamed, so
    a failed or interrupted fetch never leaves a file that looks complete. Files already
    here and intact are kept.
    """
    from warmtune.data import DataError
    from warmtune.data import fetch as fetch_dataset

    _check_names(names)
    failed = []
    for name in names:
        try:
            folder = fetch_dataset(
                name,
                root=root,
                mirror=mirror,
                progress=not quiet,
                report=None if quiet else click.echo,
            )
        except DataError as e:
            click.echo(f"warmtune: error: {e}", err=True)
            failed.append(name)
            continue
        click.echo(f"{name}: ready in {folder}")
    if failed:
        _fail(f"not fetched: {', '.join(failed)} (see above)")


@data.command("import")
@click.argument("names", nargs=-1, required=True)
@click.option(
    "--from",
    "source",
    required=True,
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="A data directory holding the datasets' folders, or one dataset's own folder.",
)
@data_dir_option
def import_(names: tuple[str, ...], source: Path, root: Path | None) -> None:
    """Copy datasets from a folder (a shared drive, another data directory), checking each file."""
    from warmtune.data import DataError, import_dataset

    _check_names(names)
    failed = []
    for name in names:
        try:
            folder = import_dataset(name, source, root=root, report=click.echo)
        except DataError as e:
            click.echo(f"warmtune: error: {e}", err=True)
            failed.append(name)
            continue
        click.echo(f"{name}: ready in {folder}")
    if failed:
        _fail(f"not imported: {', '.join(failed)} (see above)")


@data.command()
@click.argument("names", nargs=-1)
@data_dir_option
def verify(names: tuple[str, ...], root: Path | None) -> None:
    """Re-check the checksums of datasets (default: every dataset that is here).

    Exit status 1 names each corrupted or missing file.
    """
    from warmtune.data import all_datasets, data_dir, how_to_get
    from warmtune.data import verify as verify_dataset

    _check_names(names)
    base = data_dir(root)
    chosen = list(names) or [
        d.name for d in all_datasets() if any((base / f.path).exists() for f in d.files)
    ]
    if not chosen:
        click.echo(f"no datasets in {base}; `warmtune data list` shows what there is")
        return
    bad: list[str] = []
    for name in chosen:
        checks = verify_dataset(name, root=base)
        problems = [c for c in checks if not c.good]
        for c in checks:
            if c.status == "recorded" or c.status == "unpinned":
                click.echo(f"{name}: {c.file.path}: {c.detail}")
        if not problems:
            click.echo(f"{name}: ok ({len(checks)} file{'s' if len(checks) > 1 else ''})")
            continue
        for c in problems:
            click.echo(f"{name}: {c.status.upper()}: {base / c.file.path}: {c.detail}")
            bad.append(c.file.path)
        click.echo(f"{name}: to repair it, {how_to_get(name)}")
    if bad:
        _fail(f"{len(bad)} file(s) missing or corrupted: {', '.join(bad)}")


@data.command()
@click.argument("name")
@data_dir_option
def path(name: str, root: Path | None) -> None:
    """Print where dataset NAME lives (exit status 1 if it is not all there)."""
    from warmtune.data import dataset_path, how_to_get, is_present

    _check_names((name,))
    click.echo(str(dataset_path(name, root=root)))
    if not is_present(name, root=root):
        _fail(f"{name} is not (all) there; {how_to_get(name)}")
