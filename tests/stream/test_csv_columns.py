"""A CSV's columns as streams: nothing dropped without a word, no two streams of one name."""

import numpy as np
import pytest

from detector.errors import UsageError
from detector.stream.csv_columns import Skipped, read_columns


def write(tmp_path, text: str) -> str:
    path = tmp_path / "d.csv"
    path.write_text(text)
    return str(path)


def test_every_numeric_column_and_each_skipped_one_with_its_first_bad_cell(tmp_path):
    path = write(tmp_path, "t,big,na,text,none,x\n"
                           "0,1,2,a,,5\n1,1e400,,b,,6\n2,3,N/A,c,,\n3,inf,4,d,,7\n")
    table = read_columns(path)
    assert [c.name for c in table.columns] == ["t", "x"]
    assert table.skipped == [Skipped("big", "data row 2 has '1e400'"),
                             Skipped("na", "data row 3 has 'N/A'"),
                             Skipped("text", "data row 1 has 'a'"),
                             Skipped("none", "no values")]
    assert str(table.skipped[0]) == "column 'big' skipped: data row 2 has '1e400'"
    streams = table.streams()
    assert list(streams) == ["t", "x"]
    np.testing.assert_array_equal(streams["x"], [5.0, 6.0, 7.0])
    # Named columns skip nothing: the first bad cell is an error.
    assert read_columns(path, ("t", "x")).skipped == []
    with pytest.raises(UsageError, match="column 'big' is not numeric: data row 2 has '1e400'"):
        read_columns(path, ("big",))


@pytest.mark.parametrize("names", [None, ("a",), ("a", "b")])
def test_two_columns_of_one_name_are_refused(tmp_path, names):
    """Both would be one stream: before, each got the first column's values."""
    path = write(tmp_path, "a,b,a\n1,2,3\n2,3,4\n")
    with pytest.raises(UsageError, match=r"the header has 2 columns named 'a' \(columns 1, 3\)"):
        read_columns(path, names)
    # A column of another name in the same file is still read.
    assert [c.values() for c in read_columns(path, ("b",)).columns] == [[2.0, 3.0]]


def test_a_replay_refuses_two_columns_of_one_name_before_sending(tmp_path):
    from producer.csv_source import CsvSource

    path = write(tmp_path, "load,load\n1,2\n")
    with pytest.raises(UsageError, match="2 columns named 'load'"):
        CsvSource(path, ("load",))
