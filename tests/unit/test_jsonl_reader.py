"""The test-side JSON-lines reader leaves out a line whose write is still in progress."""

from __future__ import annotations

from pathlib import Path

from tests.support.jsonl import complete_lines, read_jsonl


def test_a_line_without_its_newline_is_left_out(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "seq')
    assert read_jsonl(path) == [{"id": "a"}, {"id": "b"}]
    path.write_text('{"id": "a"}\n{"id": "b"}\n{"id": "c", "sequence": 3}\n')
    assert [x["id"] for x in read_jsonl(path)] == ["a", "b", "c"]


def test_a_missing_or_empty_file_has_no_lines(tmp_path: Path) -> None:
    assert complete_lines(tmp_path / "absent.jsonl") == []
    (tmp_path / "empty.jsonl").write_text("")
    assert complete_lines(tmp_path / "empty.jsonl") == []
