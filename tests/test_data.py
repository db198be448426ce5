import gzip

import pytest
from conftest import write_sts

from elasticir.data.catalog import CATALOG, locate, spec_for
from elasticir.data.jsonl import read_jsonl
from elasticir.data.sts import load_sts
from elasticir.errors import DataNotFoundError, InputFormatError
from elasticir.io import file_checksum


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"sentence1": "a", "sentence2": "b", "score": 1}\n\n{"sentence1": "a", oops}\n')
    with pytest.raises(InputFormatError, match=r"bad\.jsonl line 3: not valid JSON"):
        load_sts(path)


def test_gzipped_file_errors_name_the_line_too(tmp_path):
    path = tmp_path / "bad.jsonl.gz"
    with gzip.open(path, "wt") as handle:
        handle.write('{"sentence1": "a", "sentence2": "b", "score": 1}\n{"sentence1": "a", "score": 2}\n')
    with pytest.raises(InputFormatError, match=r"bad\.jsonl\.gz line 2: missing field\(s\) sentence2"):
        load_sts(path)


@pytest.mark.parametrize("row, message", [
    ('{"sentence1": " ", "sentence2": "b", "score": 1}', "sentence1 is empty"),
    ('{"sentence1": "a", "sentence2": "b", "score": "high"}', "not a finite number"),
    ('[1, 2]', "expected a JSON object"),
])
def test_bad_rows_are_refused_with_their_line(tmp_path, row, message):
    path = tmp_path / "rows.jsonl"
    path.write_text('{"sentence1": "a", "sentence2": "b", "score": 1}\n' + row + "\n")
    with pytest.raises(InputFormatError, match=f"line 2: .*{message}"):
        load_sts(path)


def test_not_gzip_is_a_clear_error(tmp_path):
    path = tmp_path / "x.jsonl.gz"
    path.write_text("plain text")
    with pytest.raises(InputFormatError, match="cannot be read"):
        list(read_jsonl(path))


def test_missing_catalogued_dataset_offline_fails_fast_naming_the_path(tmp_path, monkeypatch):
    monkeypatch.setenv("ELASTICIR_OFFLINE", "1")
    with pytest.raises(DataNotFoundError) as info:
        locate("sts13", tmp_path)
    message = str(info.value)
    assert str(tmp_path / "sts" / "sts13" / "test.jsonl.gz") in message
    assert "hf:mteb/sts13-sts" in message and "ELASTICIR_DATA" in message


def test_unknown_dataset_lists_what_is_there(tiny_data_root):
    with pytest.raises(DataNotFoundError, match="toy-a, toy-b"):
        locate("nope", tiny_data_root)


def test_users_own_folder_is_usable_by_name(tiny_data_root):
    path = locate("toy-a", tiny_data_root)
    assert path.name == "test.jsonl.gz" and spec_for("toy-a", tiny_data_root).task == "sts"
    assert len(load_sts(path)) == 6


def test_catalog_knows_the_sts_and_beir_sets():
    for name in ("stsbenchmark", "sts12", "sts13", "sts14", "sts15", "sts16", "sickr"):
        assert CATALOG[name].task == "sts" and CATALOG[name].source.startswith("hf:mteb/")
    assert CATALOG["arguana"].remove_self_hits and CATALOG["quora"].remove_self_hits
    assert not CATALOG["scifact"].remove_self_hits and CATALOG["msmarco"].split == "dev"


def test_file_checksum_is_sha256(tmp_path):
    path = write_sts(tmp_path / "a.jsonl.gz")
    import hashlib

    assert file_checksum(path) == {"path": str(path), "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
                                   "bytes": path.stat().st_size}
