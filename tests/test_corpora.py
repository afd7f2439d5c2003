import gzip
import json
import math

import datasets
import numpy as np
import pandas as pd
import pytest

from slm_tune.data.cache import prepare_tokens
from slm_tune.data.corpora import corpus_fingerprint, load_corpus, split_column
from slm_tune.errors import UserError

DOCS = [f"Document number {i}. It has a few words, and ends here." for i in range(40)]


def _check(corpus, n_docs=len(DOCS)):
    splits = corpus.splits
    assert set(splits) == {"train", "validation"}
    assert splits["train"].column_names == ["text"] and splits["validation"].column_names == ["text"]
    assert len(splits["train"]) + len(splits["validation"]) == n_docs
    assert len(splits["validation"]) >= 1
    assert not set(splits["train"]["text"]) & set(splits["validation"]["text"])


def test_storyworld_default_and_sized():
    c = load_corpus("storyworld:train=100,validation=10,seed=2")
    assert len(c.splits["train"]) == 100 and len(c.splits["validation"]) == 10
    assert 0 < c.info["entropy_bpb"] < 1


def test_storyworld_bad_spec():
    with pytest.raises(UserError, match="is not one of train=N"):
        load_corpus("storyworld:stories=5")
    with pytest.raises(UserError, match="storyworld has versions 1, 2, not 3"):
        load_corpus("storyworld:version=3")
    with pytest.raises(UserError, match="entities=N is a setting of storyworld version 2"):
        corpus_fingerprint("storyworld:entities=100")
    with pytest.raises(UserError, match="entities must be 2 to 808,960"):
        corpus_fingerprint("storyworld:version=2,entities=1")


def test_storyworld_versions_in_the_spec_and_the_fingerprint():
    """No version is version 1 (what stored studies recorded); the fingerprint, and so the token
    cache's key, names the version, and version 1's is what it always was."""
    v1 = load_corpus("storyworld:train=40,validation=10,seed=2")
    assert v1.info["storyworld_version"] == 1 and "world_free_bpb" not in v1.info
    assert load_corpus("storyworld:version=1,train=40,validation=10,seed=2").splits["train"]["text"] == \
        v1.splits["train"]["text"]
    v2 = load_corpus("storyworld:version=2,train=40,validation=10,seed=2")
    assert v2.info["storyworld_version"] == 2 and v2.info["entities"] == 808_960
    assert 0 < v2.info["entropy_bpb"] < v2.info["world_free_bpb"] < 1
    assert not set(v1.splits["train"]["text"]) & set(v2.splits["train"]["text"])
    assert corpus_fingerprint("storyworld") == corpus_fingerprint("storyworld:version=1") == \
        "storyworld-v1-t30000-v1500-s0"
    assert len({corpus_fingerprint(s) for s in ("storyworld", "storyworld:version=2",
                                                 "storyworld:version=2,entities=1000")}) == 3


def test_txt_blank_lines_and_endoftext(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("\n\n".join(DOCS))
    _check(load_corpus(str(p)))
    q = tmp_path / "d.txt"
    q.write_text("<|endoftext|>".join(DOCS))
    _check(load_corpus(str(q)))


def test_jsonl_json_parquet_and_save_to_disk(tmp_path):
    rows = [{"text": d, "id": i} for i, d in enumerate(DOCS)]
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    _check(load_corpus(str(tmp_path / "c.jsonl")))
    (tmp_path / "c.json").write_text(json.dumps(rows))
    _check(load_corpus(str(tmp_path / "c.json")))
    pd.DataFrame(rows).to_parquet(tmp_path / "c.parquet")
    _check(load_corpus(str(tmp_path / "c.parquet")))
    dd = datasets.DatasetDict({"train": datasets.Dataset.from_dict({"text": DOCS[:30]}),
                               "validation": datasets.Dataset.from_dict({"text": DOCS[30:]})})
    dd.save_to_disk(str(tmp_path / "saved"))
    c = load_corpus(str(tmp_path / "saved"))
    assert c.splits["validation"]["text"] == DOCS[30:]


def test_carved_validation_is_deterministic(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("\n\n".join(DOCS))
    a, b = load_corpus(str(p)), load_corpus(str(p))
    assert a.splits["validation"]["text"] == b.splits["validation"]["text"]


def test_fingerprint_follows_content(tmp_path):
    p = tmp_path / "c.txt"
    p.write_text("\n\n".join(DOCS))
    f1 = corpus_fingerprint(str(p))
    p.write_text("\n\n".join(DOCS[:-1]))
    assert corpus_fingerprint(str(p)) != f1


@pytest.mark.parametrize("content,match", [
    (None, "is not storyworld, tinystories, hf:owner/name or an existing path"),
    ("", "has 0 document"),
    ("x", "too little text"),
])
def test_bad_local_corpora(tmp_path, content, match):
    p = tmp_path / "x.txt"
    if content is not None:
        p.write_text(content)
    with pytest.raises(UserError, match=match):
        load_corpus(str(p))


PLAY = "\n".join(f"LINE {i}: Now is the winter of our discontent, made glorious summer {i}." for i in range(400))


def test_one_long_text_is_split_by_position_at_a_line(tmp_path):
    p = tmp_path / "play.txt"
    p.write_text(PLAY, encoding="utf-8")
    c = load_corpus(str(p))
    assert c.info["split"]["by"] == "position" and c.info["split"]["documents"] == 1
    train, val = c.splits["train"]["text"], c.splits["validation"]["text"]
    assert "".join(train) + "".join(val) == PLAY  # every byte in exactly one split
    assert val[0].startswith("LINE ") and train[-1].endswith("\n")  # cut at a line boundary
    share = len("".join(val)) / len(PLAY)
    assert 0.04 < share < 0.06
    assert load_corpus(str(p)).splits["validation"]["text"] == val  # deterministic


def test_a_few_documents_are_split_by_position_too(tmp_path):
    docs = [PLAY[:3000], PLAY[3000:9000], PLAY[9000:]]
    (tmp_path / "three.txt").write_text("\n\n".join(d.strip() for d in docs))
    c = load_corpus(str(tmp_path / "three.txt"))
    assert c.info["split"]["by"] == "position" and c.info["split"]["documents"] == 3
    assert len(c.splits["train"]) == 3 and len(c.splits["validation"]) == 1  # the last one cut in two


def test_windows_line_endings_byte_order_mark_and_gzip_read_like_plain_text(tmp_path):
    plain = "\n\n".join(DOCS)
    (tmp_path / "plain.txt").write_text(plain, encoding="utf-8")
    (tmp_path / "windows.txt").write_bytes(b"\xef\xbb\xbf" + plain.replace("\n", "\r\n").encode("utf-8"))
    (tmp_path / "packed.txt.gz").write_bytes(gzip.compress(plain.encode("utf-8")))
    rows = "\n".join(json.dumps({"text": d}) for d in DOCS)
    (tmp_path / "c.jsonl").write_text(rows)
    (tmp_path / "c.jsonl.gz").write_bytes(gzip.compress(rows.encode("utf-8")))
    expected = load_corpus(str(tmp_path / "plain.txt")).splits
    for name in ("windows.txt", "packed.txt.gz", "c.jsonl", "c.jsonl.gz"):
        got = load_corpus(str(tmp_path / name)).splits
        for split in ("train", "validation"):
            assert got[split]["text"] == expected[split]["text"], name


def test_bytes_that_are_not_utf8_are_counted_or_refused(tmp_path):
    latin1 = "\n\n".join(DOCS).replace("Document", "Dokument \xe9t\xe9").encode("latin-1")
    (tmp_path / "latin1.txt").write_bytes(latin1)
    c = load_corpus(str(tmp_path / "latin1.txt"))
    assert c.info["replaced_bytes"] == 2 * len(DOCS)
    lines = []
    prepare_tokens(str(tmp_path / "latin1.txt"), 1000, cache_dir=tmp_path / "cache", log=lines.append)
    assert any(line.startswith("warning: ") and f"{2 * len(DOCS):,} byte sequence(s) that are not UTF-8" in line
               for line in lines), lines
    (tmp_path / "binary.txt").write_bytes(bytes(range(256)) * 64)
    with pytest.raises(UserError, match="is mostly not text"):
        load_corpus(str(tmp_path / "binary.txt"))
    (tmp_path / "broken.txt.gz").write_bytes(b"not gzip at all")
    with pytest.raises(UserError, match="not a readable gzip file"):
        load_corpus(str(tmp_path / "broken.txt.gz"))


def test_text_column_by_name_or_the_only_one(tmp_path):
    rows = [{"story": d, "id": i, "score": 0.5} for i, d in enumerate(DOCS)]
    (tmp_path / "one.jsonl").write_text("\n".join(json.dumps(r) for r in rows))
    c = load_corpus(str(tmp_path / "one.jsonl"))  # the only string column
    assert c.info["column"] == "story"
    _check(c)
    rows = [{"title": f"T{i}", "story": d, "id": i} for i, d in enumerate(DOCS)]
    pd.DataFrame(rows).to_parquet(tmp_path / "two.parquet")
    with pytest.raises(UserError, match=r"several of text \(title, story\).*:column=title"):
        load_corpus(str(tmp_path / "two.parquet"))
    c = load_corpus(f"{tmp_path / 'two.parquet'}:column=story")
    assert c.splits["train"].column_names == ["text"] and c.info["column"] == "story"
    _check(c)
    assert corpus_fingerprint(f"{tmp_path / 'two.parquet'}:column=story") != corpus_fingerprint(
        f"{tmp_path / 'two.parquet'}:column=title")
    with pytest.raises(UserError, match=r"has no column 'body'; its columns are: title \(string\), story"):
        load_corpus(f"{tmp_path / 'two.parquet'}:column=body")
    with pytest.raises(UserError, match="column 'id' does not hold text"):
        load_corpus(f"{tmp_path / 'two.parquet'}:column=id")
    (tmp_path / "numbers.jsonl").write_text("\n".join(json.dumps({"a": i, "b": [i]}) for i in range(30)))
    with pytest.raises(UserError, match=r"has no column of text; its columns are: a \(int64\), b"):
        load_corpus(str(tmp_path / "numbers.jsonl"))
    assert split_column("hf:someone/corpus:column=story") == ("hf:someone/corpus", "story")
    assert split_column("hf:someone/corpus") == ("hf:someone/corpus", None)
    assert split_column(r"C:\\data\\c.jsonl:column=body") == (r"C:\\data\\c.jsonl", "body")


def test_a_corpus_just_above_one_validation_block_trains(tmp_path, tiny_config):
    from slm_tune.data.cache import check_data
    from slm_tune.train import train

    p = tmp_path / "small.txt"
    p.write_text(PLAY, encoding="utf-8")
    data = prepare_tokens(str(p), 1000, cache_dir=tmp_path / "cache")
    assert data.meta["split"]["by"] == "position"
    n_val = len(data.validation)
    too_big = tiny_config(dataset=str(p), block_size=n_val - 1)
    with pytest.raises(UserError, match=f"validation split .* has {n_val} tokens, too few for block_size={n_val - 1}"):
        check_data(too_big, data)
    fits = tiny_config(dataset=str(p), block_size=n_val - 2, max_iters=4, eval_interval=2)
    result = train(fits, data)
    assert result.status == "finished" and all(math.isfinite(h["val_loss"]) for h in result.history)


@pytest.mark.parametrize("spec", ["tinystories", "hf:someone/some_corpus"])
def test_hub_unreachable_is_one_line(spec, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        load_corpus(spec)
    assert "storyworld" in str(e.value) and "\n" not in str(e.value)


def test_data_fraction_of_one_long_text_takes_its_first_part(tmp_path):
    p = tmp_path / "play.txt"
    p.write_text(PLAY, encoding="utf-8")
    full = prepare_tokens(str(p), 1000, cache_dir=tmp_path / "cache")
    half = prepare_tokens(str(p), 1000, data_fraction=0.5, cache_dir=tmp_path / "cache")
    assert 0.45 < len(half.train) / len(full.train) < 0.55
    assert np.array_equal(half.validation, full.validation)  # the same validation text either way
    lines = []
    prepare_tokens(str(p), 2000, cache_dir=tmp_path / "cache", log=lines.append)
    assert "validation is the last 5% of the text, cut at a line: 1 document(s)" in lines[0]
