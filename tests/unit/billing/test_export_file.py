"""``billing export --out``: a file appears whole or not at all; devices and pipes are
written to as the export comes."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from trunkline.billing.export_file import write_file
from trunkline.errors import InvalidRequest


def _chunks(fail_after: int | None = None) -> Iterator[bytes]:
    for index in range(3):
        if fail_after is not None and index == fail_after:
            raise UnicodeEncodeError("utf-8", "x", 0, 1, "a tenant name it cannot write")
        yield f"line {index}\r\n".encode()


def test_an_export_file_appears_whole(tmp_path: Path) -> None:
    out = tmp_path / "nested" / "nov.csv"
    write_file(out, _chunks())
    assert out.read_bytes() == b"line 0\r\nline 1\r\nline 2\r\n"
    assert list(out.parent.iterdir()) == [out]


def test_an_export_failing_part_way_leaves_no_file_that_looks_complete(tmp_path: Path) -> None:
    out = tmp_path / "nov.csv"
    with pytest.raises(UnicodeEncodeError):
        write_file(out, _chunks(fail_after=2))
    assert list(tmp_path.iterdir()) == []


def test_a_device_is_written_to_directly_and_a_bad_path_is_a_clear_error(tmp_path: Path) -> None:
    write_file(Path("/dev/null"), _chunks())  # as /dev/stdout or a pipe: no ".partial" beside it
    (tmp_path / "file").write_text("")
    with pytest.raises(InvalidRequest, match="cannot write"):
        write_file(tmp_path / "file" / "nov.csv", _chunks())  # under a file, not a directory
