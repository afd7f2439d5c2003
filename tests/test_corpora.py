import json

import datasets
import pandas as pd
import pytest

from slm_tune.data.corpora import corpus_fingerprint, load_corpus
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
    ("just one document", "needs at least 2"),
])
def test_bad_local_corpora(tmp_path, content, match):
    p = tmp_path / "x.txt"
    if content is not None:
        p.write_text(content)
    with pytest.raises(UserError, match=match):
        load_corpus(str(p))


def test_no_text_column(tmp_path):
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"body": d}) for d in DOCS))
    with pytest.raises(UserError, match="has no 'text' column"):
        load_corpus(str(tmp_path / "c.jsonl"))


@pytest.mark.parametrize("spec", ["tinystories", "hf:someone/some_corpus"])
def test_hub_unreachable_is_one_line(spec, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(UserError) as e:
        load_corpus(spec)
    assert "storyworld" in str(e.value) and "\n" not in str(e.value)
