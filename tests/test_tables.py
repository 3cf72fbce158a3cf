"""``hm3.io.tables``: one streamed reader for .jsonl, .csv, .tsv and .parquet, errors by line."""

from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hm3.errors import Hm3Error
from hm3.io.tables import iter_records, peek_columns, read_columns, table_format
from hm3.io.texts import iter_text_batches, open_texts

ROWS = [
    {"text": "first, with a comma", "label": "a"},
    {"text": 'a "quoted" word', "label": "b"},
    {"text": "third", "label": "a"},
]


def write(path, rows=ROWS):
    """``rows`` in the format named by ``path``'s suffix."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    elif path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(rows), path)
    else:
        sep = "\t" if path.suffix == ".tsv" else ","

        def cell(value: str) -> str:
            return '"' + value.replace('"', '""') + '"' if {sep, '"'} & set(value) else value

        lines = [sep.join(rows[0]), *(sep.join(cell(v) for v in r.values()) for r in rows)]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv", ".parquet"])
def test_every_format_reads_the_same_rows(tmp_path, suffix):
    path = write(tmp_path / f"t{suffix}")
    assert [r for _, r in iter_records(path, "t")] == ROWS
    assert [row for row, _ in iter_records(path, "t")] == [0, 1, 2]
    names, rows = peek_columns(path, "t")
    assert names == ["text", "label"] and rows == (3 if suffix == ".parquet" else None)
    names, columns, rows = read_columns(path, "t", ["label", "nope"])
    assert columns == {"label": ["a", "b", "a"]} and rows == 3
    texts = open_texts(path)
    assert [t for batch in iter_text_batches(texts, 2) for t in batch] == [r["text"] for r in ROWS]


@pytest.mark.parametrize("suffix", [".jsonl", ".csv", ".tsv", ".parquet"])
def test_an_empty_table_has_no_rows(tmp_path, suffix):
    path = tmp_path / f"e{suffix}"
    if suffix == ".parquet":
        pq.write_table(pa.table({"text": pa.array([], pa.string())}), path)
    else:
        path.write_text("" if suffix == ".jsonl" else "text\n", encoding="utf-8")
    assert peek_columns(path, "e")[1] == 0
    assert list(iter_records(path, "e")) == []
    with pytest.raises(Hm3Error, match="has no rows"):
        open_texts(path)


@pytest.mark.parametrize(
    ("name", "content", "error"),
    [
        (
            "bad.jsonl",
            '{"text": "a"}\n\n{"text": \n',
            r"bad\.jsonl: line 3 is not valid JSON .*; fix that line",
        ),
        ("bad.jsonl", '{"text": "a"}\n["a"]\n', "line 2 is not a JSON object"),
        (
            "bad.csv",
            'text,label\na,b\n"open quote,b\n',
            r"bad\.csv: line 3 is not valid csv .*; fix that line",
        ),
        ("bad.csv", "text,label\na,b\nc,d,e\n", "line 3 has 3 fields, the header 2; quote"),
        ("bad.tsv", "text\tlabel\na\tb\tc\n", "line 2 has 3 fields, the header 2"),
    ],
)
def test_a_bad_line_is_named_by_its_number(tmp_path, name, content, error):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(Hm3Error, match=error):
        list(iter_records(path, str(path)))


def test_undecodable_bytes_and_broken_parquet_name_the_file(tmp_path):
    path = tmp_path / "latin.jsonl"
    path.write_bytes(b'{"text": "a"}\n{"text": "caf\xe9"}\n')
    with pytest.raises(Hm3Error, match=r"latin\.jsonl: line 2 is not UTF-8 text; save the file as"):
        list(iter_records(path, str(path)))
    path = tmp_path / "latin.csv"  # read by the csv module: its decoding error
    path.write_bytes(b"text\ncaf\xe9\n")
    with pytest.raises(
        Hm3Error, match=r"latin\.csv: not UTF-8 text \(.*\); save the file as UTF-8"
    ):
        list(iter_records(path, str(path)))
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 not really")
    with pytest.raises(Hm3Error, match=r"broken\.parquet: cannot read the file"):
        list(iter_records(path, str(path)))


def test_missing_files_types_and_columns(tmp_path):
    with pytest.raises(Hm3Error, match=r"nope\.csv: file not found; check the path"):
        table_format(tmp_path / "nope.csv", str(tmp_path / "nope.csv"))
    (tmp_path / "t.txt").write_text("a\n", encoding="utf-8")
    with pytest.raises(Hm3Error, match=r"'\.txt' not supported; use \.jsonl, \.csv, \.tsv"):
        iter_records(tmp_path / "t.txt", "t").__next__()
    path = write(tmp_path / "t.tsv")
    with pytest.raises(Hm3Error, match="no column 'body'; columns in the file: text, label"):
        open_texts(path, "body")


def test_jsonl_columns_are_every_key_seen_and_csv_short_rows_give_none(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"text": "a"}\n{"text": "b", "label": "x"}\n', encoding="utf-8")
    names, columns, rows = read_columns(path, "m", ["label"])
    assert names == ["text", "label"] and columns == {"label": [None, "x"]} and rows == 2
    path = tmp_path / "short.csv"
    path.write_text("text,label\na\n\nb,y\n", encoding="utf-8")
    assert [r for _, r in iter_records(path, "s")] == [
        {"text": "a", "label": None},
        {"text": "b", "label": "y"},
    ]


def test_parquet_reads_only_the_columns_asked_for(tmp_path):
    path = write(tmp_path / "t.parquet")
    assert [r for _, r in iter_records(path, "t", ["label"])] == [{"label": v} for v in "aba"]
    assert read_columns(path, "t", ["nope"]) == (["text", "label"], {}, 3)


def test_blank_means_nothing_a_tokenizer_reads(tmp_path):
    """White space, zero-width spaces, byte order marks and control characters only: blank
    (the tokenizer drops them all, so the model would score the empty string). A blank row of
    a texts file is skipped; a text of them is refused by predict (and the server)."""
    from hm3.io.texts import TextCount, is_blank
    from hm3.model.predictor import check_texts

    for text in ("", "  \n\t", "\u200b", "\ufeff \u200d", "\x00\x07", "\u2028"):
        assert is_blank(text), repr(text)
    for text in ("a", "\u200bok", " ✓ ", "日本", "\u00a0x"):
        assert not is_blank(text), repr(text)
    path = tmp_path / "t.jsonl"
    rows = [{"text": "one"}, {"text": "\u200b\u200b"}, {"text": "two"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    count = TextCount()
    batches = list(iter_text_batches(open_texts(path, "text"), 8, count=count))
    assert batches == [["one", "two"]] and count.skipped == 1
    with pytest.raises(Hm3Error, match=r"texts\[0\]: empty text '\\u200b'; give every text"):
        check_texts(["\u200b"])
