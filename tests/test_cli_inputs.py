"""The command line's one data reader: .json, .csv, .npy, '-' (stdin) and inline JSON; clear errors."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mlops_magics.cli.inputs import read_body, read_column, read_data, read_text
from mlops_magics.errors import InvalidInputError
from tests.cli_run import mlops

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]


def test_each_format_reads_to_the_same_rows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "rows.json").write_text('[[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]')
    (tmp_path / "records.json").write_text('[{"a": 5.1, "b": 3.5}, {"a": 6.2, "b": 2.9}]')
    (tmp_path / "rows.csv").write_text("sl,sw,pl,pw\n5.1,3.5,1.4,0.2\n6.2,2.9,4.3,1.3\n")
    np.save(tmp_path / "rows.npy", np.array(ROWS))
    assert read_data(str(tmp_path / "rows.json")) == ROWS
    assert read_data(str(tmp_path / "records.json")) == [{"a": 5.1, "b": 3.5}, {"a": 6.2, "b": 2.9}]
    frame = read_data(str(tmp_path / "rows.csv"))
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["sl", "sw", "pl", "pw"]
    assert frame.to_numpy().tolist() == ROWS
    assert read_data(str(tmp_path / "rows.npy")).tolist() == ROWS
    monkeypatch.setattr("sys.stdin", io.StringIO('{"data": [[1, 2]]}'))
    assert read_data("-") == {"data": [[1, 2]]}
    assert read_body("[[1, 2]]") == [[1, 2]] and read_body(str(tmp_path / "rows.json")) == ROWS


def test_labels_are_one_column_of_any_format(tmp_path: Path) -> None:
    (tmp_path / "y.csv").write_text("species\n0\n2\n")
    (tmp_path / "y.json").write_text("[0, 2]")
    np.save(tmp_path / "y.npy", np.array([[0], [2]]))
    for name in ("y.csv", "y.json", "y.npy"):
        assert list(read_column(str(tmp_path / name))) == [0, 2], name
    (tmp_path / "two.csv").write_text("a,b\n1,2\n")
    with pytest.raises(InvalidInputError, match=r"--labels '.*two.csv' has 2 columns \(a, b\): give a file with one"):
        read_column(str(tmp_path / "two.csv"))
    (tmp_path / "rows.json").write_text("[[1, 2]]")
    with pytest.raises(InvalidInputError, match="is not one column: give a JSON list of values"):
        read_column(str(tmp_path / "rows.json"))


@pytest.mark.parametrize("name, content, message", [
    ("missing.json", None, r"--data '.*missing.json': no such file\. Give a .json file"),
    ("data.parquet", b"PAR1", r"--data '.*data.parquet': cannot read a .parquet file\. Give a .json file .*, a "
                              r".csv file with a header row, a .npy file, or - for JSON on standard input"),
    ("data", b"1", r"cannot read a file without a suffix"),
    ("bad.json", b"[[1, 2", r"--data '.*bad.json' is not JSON: Expecting"),
    ("empty.csv", b"", r"--data '.*empty.csv' is not CSV: No columns to parse"),
    ("bad.npy", b"not numpy at all", r"--data '.*bad.npy' is not a NumPy .npy array"),
    ("latin.json", "[\"caf\xe9\"]".encode("latin-1"), r"--data '.*latin.json' is not JSON"),
])
def test_unreadable_data_is_named_with_what_is_accepted(tmp_path: Path, name: str, content: bytes | None,
                                                        message: str) -> None:
    if content is not None:
        (tmp_path / name).write_bytes(content)
    with pytest.raises(InvalidInputError, match=message):
        read_data(str(tmp_path / name))


def test_a_pickled_npy_file_is_refused_not_loaded(tmp_path: Path) -> None:
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InvalidInputError, match="is not a NumPy .npy array: .*allow_pickle=False"):
        read_data(str(tmp_path / "objects.npy"))


def test_inline_data_that_is_not_json_and_unreadable_text_files(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"DATA '\[\[1, 2' is neither a data file nor inline JSON"):
        read_body("[[1, 2")
    with pytest.raises(InvalidInputError, match=r"Cannot read --file '.*nope.py': No such file or directory\."):
        read_text(str(tmp_path / "nope.py"), "--file")


def test_the_verbs_exit_2_with_the_readers_message(home: Path, tmp_path: Path,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    done = mlops(capsys, "call", "svc", str(tmp_path / "nope.csv"))
    assert done.code == 2 and f"DATA '{tmp_path / 'nope.csv'}': no such file" in done.err
    done = mlops(capsys, "validate", "m", "--data", str(tmp_path / "x.txt"), "--labels", "y.csv",
                 "--metric", "accuracy")
    assert done.code == 2 and "cannot read a .txt file" in done.err and "Traceback" not in done.err
