"""File naming rules: save counters, escapes, /view statuses and upload renames."""

from __future__ import annotations

from pathlib import Path

import pytest

from sakuga.engine.files import DataDirs, SaveOutsideOutputError


@pytest.fixture
def dirs(tmp_path: Path) -> DataDirs:
    dirs = DataDirs(tmp_path)
    dirs.prepare()
    return dirs


def test_save_counter_continues_after_files_on_disk(dirs: DataDirs) -> None:
    output = dirs.folder("output")
    (output / "s01_00001_.png").write_bytes(b"x")
    (output / "s01_00007_.png").write_bytes(b"x")
    (output / "s01x_00009_.png").write_bytes(b"x")
    target = dirs.save_target("s01")
    assert (target.filename, target.counter, target.subfolder) == ("s01", 8, "")


def test_prefix_directory_becomes_the_subfolder(dirs: DataDirs) -> None:
    target = dirs.save_target("books/page")
    assert (target.subfolder, target.filename, target.counter) == ("books", "page", 1)
    assert target.folder == dirs.folder("output") / "books"


def test_prefix_escaping_the_output_folder_fails_with_comfyuis_message(dirs: DataDirs) -> None:
    with pytest.raises(SaveOutsideOutputError) as error:
        dirs.save_target("../escape")
    assert str(error.value).startswith(
        "**** ERROR: Saving image outside the output folder is not allowed.\n full_output_folder: "
    )


@pytest.mark.parametrize(
    ("filename", "kind", "subfolder", "status"),
    [
        ("a.png", "output", "", 200),
        ("a.png [output]", "bogus", "", 200),
        ("missing.png", "output", "", 404),
        ("../a.png", "output", "", 400),
        ("/a.png", "output", "", 400),
        ("a.png", "bogus", "", 400),
        ("a.png", "output", "..", 403),
    ],
)
def test_view_paths(dirs: DataDirs, filename: str, kind: str, subfolder: str, status: int) -> None:
    (dirs.folder("output") / "a.png").write_bytes(b"x")
    assert dirs.view_path(filename, kind, subfolder)[0] == status


def test_uploads_reuse_identical_bytes_and_rename_others(dirs: DataDirs) -> None:
    assert dirs.store_upload("a.png", b"one", "input", "", overwrite=False) == "a.png"
    assert dirs.store_upload("a.png", b"one", "input", "", overwrite=False) == "a.png"
    assert dirs.store_upload("a.png", b"two", "input", "", overwrite=False) == "a (1).png"
    assert dirs.store_upload("a.png", b"three", "input", "", overwrite=False) == "a (2).png"
    assert dirs.store_upload("a.png", b"four", "input", "", overwrite=True) == "a.png"
    assert (dirs.folder("input") / "a.png").read_bytes() == b"four"
    with pytest.raises(ValueError):
        dirs.store_upload("a.png", b"x", "input", "../..", overwrite=True)
    assert dirs.input_files() == ["a (1).png", "a (2).png", "a.png"]
    assert dirs.input_exists("a.png") and not dirs.input_exists("../a.png")


def test_prepare_wipes_temp(dirs: DataDirs) -> None:
    (dirs.folder("temp") / "old.png").write_bytes(b"x")
    dirs.prepare()
    assert list(dirs.folder("temp").iterdir()) == []
