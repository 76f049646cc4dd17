"""The Omniglot converter, on small zips in the public PNG-folder format."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from warmtune.data import get_dataset
from warmtune.data.checks import npz_member_sha256
from warmtune.data.convert import omniglot_zip_to_npz, read_omniglot_zip, write_npz


def _drawings(seed: int, n: int = 20) -> np.ndarray:
    """``n`` asymmetric 105x105 drawings (True = white), so a flip or transpose shows."""
    rng = np.random.default_rng(seed)
    images = rng.random((n, 105, 105)) > 0.1
    images[:, :5, :50] = False  # an ink bar in the top-left corner of every drawing
    return images


# Folder (alphabetical) order differs from id order: the id decides.
CHARACTERS = [
    ("Alphabet_of_the_Magi", "character01", 709, _drawings(0)),
    ("Alphabet_of_the_Magi", "character02", 710, _drawings(1)),
    ("Tifinagh", "character01", 3, _drawings(2)),
]
BY_ID = sorted(CHARACTERS, key=lambda c: c[2])


@pytest.mark.parametrize("mode", ["1", "L"])
def test_the_converter_reproduces_the_stored_layout(tmp_path, make_omniglot_zip, mode):
    archive = tmp_path / "images_background.zip"
    archive.write_bytes(make_omniglot_zip("images_background", CHARACTERS, mode=mode))
    out = tmp_path / "images_background.npz"
    assert omniglot_zip_to_npz(archive, out) == 3
    with np.load(out) as npz:
        assert sorted(npz.files) == ["images", "labels"]
        images, labels = npz["images"], npz["labels"]
    # The layout the trainable reads (warmtune.trainables.omniglot): bool
    # [characters, 20, 105, 105], True = white, as in the PNG; labels int64 [characters, 20].
    assert images.dtype == np.bool_ and images.shape == (3, 20, 105, 105)
    assert labels.dtype == np.int64 and labels.shape == (3, 20)
    np.testing.assert_array_equal(images, np.stack([c[3] for c in BY_ID]))
    np.testing.assert_array_equal(labels, np.repeat(np.arange(3)[:, None], 20, axis=1))
    assert not images[0, 0, 0, 0] and images[0, 0, 104, 104] == BY_ID[0][3][0, 104, 104]


def test_the_same_zip_converts_to_the_same_bytes(tmp_path, make_omniglot_zip):
    archive = tmp_path / "a.zip"
    archive.write_bytes(make_omniglot_zip("images_evaluation", CHARACTERS[:1]))
    omniglot_zip_to_npz(archive, tmp_path / "1.npz")
    omniglot_zip_to_npz(archive, tmp_path / "2.npz")
    assert (tmp_path / "1.npz").read_bytes() == (tmp_path / "2.npz").read_bytes()


def test_write_npz_reads_back_with_numpy(tmp_path, npy_digest):
    arrays = {"images": np.eye(3, dtype=bool), "labels": np.arange(6, dtype=np.int64)}
    write_npz(tmp_path / "x.npz", **arrays)
    with np.load(tmp_path / "x.npz") as npz:
        for name, array in arrays.items():
            np.testing.assert_array_equal(npz[name], array)
    digests = npz_member_sha256(tmp_path / "x.npz")
    assert digests == {f"{k}.npy": npy_digest(v) for k, v in arrays.items()}


@pytest.mark.parametrize(
    "change, message",
    [
        ("drop a drawer", r"Tifinagh/character01 has drawers \[1, .*19\], expected 1 to 20"),
        ("wrong size", r"is 104x105, expected 105x105"),
        ("stray png", r"junk.png is not ALPHABET/characterNN/ID_DRAWER.png"),
        ("id twice", r"character id 3 is in two folders"),
    ],
)
def test_a_zip_that_is_not_omniglot_is_refused_naming_the_file(
    tmp_path, make_omniglot_zip, change, message
):
    from PIL import Image

    members = dict(_members(make_omniglot_zip("images_background", CHARACTERS[2:])))
    if change == "drop a drawer":
        del members["images_background/Tifinagh/character01/0003_20.png"]
    elif change == "wrong size":
        png = io.BytesIO()
        Image.fromarray(np.ones((105, 104), dtype=bool)).save(png, format="PNG")
        members["images_background/Tifinagh/character01/0003_05.png"] = png.getvalue()
    elif change == "stray png":
        members["images_background/junk.png"] = members[
            "images_background/Tifinagh/character01/0003_01.png"
        ]
    else:
        members["images_background/Tifinagh/character02/0003_01.png"] = b"unused"
    archive = tmp_path / "bad.zip"
    with zipfile.ZipFile(archive, "w") as z:
        for name, data in members.items():
            z.writestr(name, data)
    with pytest.raises(ValueError, match=message):
        read_omniglot_zip(archive)


def _members(data: bytes) -> list[tuple[str, bytes]]:
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        return [(i.filename, z.read(i)) for i in z.infolist() if not i.is_dir()]


def test_reference_characters_round_trip_through_the_public_format(
    need_data, tmp_path, make_omniglot_zip
):
    """Reference characters written as official-style PNGs convert back bit for bit."""
    folder = need_data("omniglot")
    with np.load(folder / "images_background.npz") as npz:
        picked = [0, 1, 481, 963]
        reference = npz["images"][picked]
    characters = [
        ("Alphabet", f"character{i + 1:02d}", char_id, reference[i])
        for i, char_id in enumerate([5, 17, 300, 964])
    ]
    archive = tmp_path / "images_background.zip"
    archive.write_bytes(make_omniglot_zip("images_background", characters))
    images, labels = read_omniglot_zip(archive)
    np.testing.assert_array_equal(images, reference)
    assert images.dtype == reference.dtype and labels.tolist() == [[i] * 20 for i in range(4)]


def test_the_registry_checks_the_converted_arrays_not_the_zip_container(need_data, tmp_path):
    """The reference file re-written by this Python's zip writer still verifies."""
    folder = need_data("omniglot")
    entry = get_dataset("omniglot")
    with np.load(folder / "images_evaluation.npz") as npz:
        arrays = {"images": npz["images"], "labels": npz["labels"]}
    out = tmp_path / "images_evaluation.npz"
    write_npz(out, **arrays)
    file = next(f for f in entry.files if f.name == "images_evaluation.npz")
    assert npz_member_sha256(out) == dict(file.npz_sha256 or {})
