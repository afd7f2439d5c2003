import json
import multiprocessing as mp
import shutil

import numpy as np

from slm_tune.data.cache import entry_key, prepare_tokens
from slm_tune.data.tokenizer import get_tokenizer
from conftest import TINY_DATASET

SPEC = "storyworld:train=200,validation=20,seed=5"


def test_builds_once_then_reuses(tmp_path):
    logs = []
    a = prepare_tokens(SPEC, 1000, cache_dir=tmp_path, log=logs.append)
    assert any("tokenizing" in m for m in logs)
    logs.clear()
    b = prepare_tokens(SPEC, 1000, cache_dir=tmp_path, log=logs.append)
    assert logs == [] and a.path == b.path
    assert np.array_equal(a.train, b.train)
    meta = b.meta
    assert meta["splits"]["train"]["tokens"] == len(b.train) and meta["tokenizer"] == "gpt2-1000"
    assert b.train.dtype == np.uint16 and int(b.train.max()) <= 999
    assert 0 < meta["source"]["entropy_bpb"] < 1


def test_tokens_decode_to_the_corpus_with_eot_between_documents(tmp_path):
    from slm_tune.data.corpora import load_corpus
    data = prepare_tokens(SPEC, 1000, cache_dir=tmp_path)
    enc = get_tokenizer(1000)
    docs = enc.decode(data.validation.tolist()).split("<|endoftext|>")
    assert docs[:-1] == load_corpus(SPEC).splits["validation"]["text"] and docs[-1] == ""
    text_bytes = sum(len(d.encode()) for d in docs)
    assert data.meta["splits"]["validation"]["bytes"] == text_bytes


def test_data_fraction_subsets_train_only(tmp_path):
    full = prepare_tokens(SPEC, 1000, cache_dir=tmp_path)
    part = prepare_tokens(SPEC, 1000, data_fraction=0.1, cache_dir=tmp_path)
    assert part.path != full.path
    assert part.meta["splits"]["train"]["documents"] == 20
    assert np.array_equal(part.validation, full.validation)
    assert part.meta["splits"]["train"]["tokens"] < full.meta["splits"]["train"]["tokens"] / 5


def test_key_depends_on_corpus_tokenizer_and_fraction():
    keys = {entry_key(SPEC, 1000, 1.0), entry_key(SPEC, 2000, 1.0), entry_key(SPEC, 1000, 0.5),
            entry_key(TINY_DATASET, 1000, 1.0)}
    assert len(keys) == 4


def test_key_names_the_storyworld_version():
    assert entry_key("storyworld", 2000, 1.0) == "storyworld-gpt2-2000-f1-7c7d09407ccd"  # as before version 2
    assert entry_key("storyworld:version=2", 2000, 1.0) != entry_key("storyworld", 2000, 1.0)


def test_damaged_entry_is_detected_and_rebuilt(tmp_path):
    data = prepare_tokens(SPEC, 1000, cache_dir=tmp_path)
    original = np.array(data.train)
    path = data.path
    del data
    raw = bytearray((path / "train.bin").read_bytes())
    raw[100] ^= 0xFF
    (path / "train.bin").write_bytes(bytes(raw))
    logs = []
    again = prepare_tokens(SPEC, 1000, cache_dir=tmp_path, log=logs.append)
    assert any("damaged" in m for m in logs)
    assert np.array_equal(np.array(again.train), original)


def test_crash_mid_build_leaves_nothing_that_looks_whole(tmp_path):
    data = prepare_tokens(SPEC, 1000, cache_dir=tmp_path)
    path = data.path
    del data
    # A crash before the rename leaves only a temporary folder; one after a partial copy by
    # hand leaves an entry without meta.json: both must be rebuilt, never used.
    tmp = path.with_name(path.name + ".tmp-99999")
    shutil.copytree(path, tmp)
    (path / "meta.json").unlink()
    (path / "validation.bin").write_bytes(b"\x00" * 10)
    logs = []
    rebuilt = prepare_tokens(SPEC, 1000, cache_dir=tmp_path, log=logs.append)
    assert any("tokenizing" in m for m in logs)
    assert json.loads((rebuilt.path / "meta.json").read_text())["splits"]["validation"]["tokens"] == len(rebuilt.validation)


def _build(cache_dir, queue):
    logs = []
    data = prepare_tokens("storyworld:train=1500,validation=50,seed=9", 1000, cache_dir=cache_dir, log=logs.append)
    queue.put((any("tokenizing" in m for m in logs), str(data.path), int(data.train.sum())))


def test_concurrent_builders_make_one_entry(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_build, args=(str(tmp_path), queue)) for _ in range(2)]
    for p in procs:
        p.start()
    results = [queue.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert sorted(r[0] for r in results) == [False, True]  # exactly one built, the other waited
    assert results[0][1:] == results[1][1:]
    entries = [p for p in (tmp_path / "tokens").iterdir() if p.is_dir()]
    assert len(entries) == 1


def _per_document(texts, vocab_size):
    enc = get_tokenizer(vocab_size)
    return [t for ids in enc.encode_ordinary_batch(texts) for t in (*ids, enc.eot_token)]


def test_tokens_equal_per_document_encoding(tmp_path):
    """Batches are encoded as one joined text; that must not change a single token, including
    at document edges (spaces, newlines) and where a document contains the marker itself."""
    docs = [" leading space", "trailing space ", "two\n\nlines\n", "  ", "numbers 123 456", "é café",
            "a literal <|endoftext|> inside", "x" * 50, "it's", "'s start"] * 3
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps({"text": d}) for d in docs), encoding="utf-8")
    from slm_tune.data.corpora import load_corpus
    corpus = load_corpus(str(tmp_path / "c.jsonl"))
    for vocab in (1000, 50257):
        data = prepare_tokens(str(tmp_path / "c.jsonl"), vocab, cache_dir=tmp_path / "cache")
        for split, arr in (("train", data.train), ("validation", data.validation)):
            assert arr.tolist() == _per_document(corpus.splits[split]["text"], vocab), (vocab, split)
    story = prepare_tokens(SPEC, 1000, cache_dir=tmp_path / "cache")
    assert story.train.tolist() == _per_document(load_corpus(SPEC).splits["train"]["text"], 1000)
