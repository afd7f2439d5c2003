"""Every corpus, behind one function: a dataset spec in, a DatasetDict (train, validation; "text") out.

Specs:
- ``storyworld`` or ``storyworld:train=N,validation=M,seed=S,version=V``: the embedded corpus, in
  version 1 unless the spec names another (stored studies recorded version 1 as plain
  ``storyworld``); version 2 also takes ``entities=N``, the size of its world.
- ``tinystories``: roneneldan/TinyStories from the Hugging Face Hub (the seed's data).
- ``hf:owner/name``: any Hub dataset.
- a local path: a .txt file (documents separated by blank lines or ``<|endoftext|>``), .jsonl or
  .json, .parquet, or a directory written by ``datasets.save_to_disk``; .txt and .jsonl/.json may
  be gzip-compressed (``.txt.gz``). Text files may have Windows line endings or a UTF-8 byte-order
  mark; bytes that are not UTF-8 are replaced and counted, and a file that is mostly not text is
  refused.
- ``...:column=NAME`` on a Hub id or a path: the documents are in column NAME. Without it, the
  ``text`` column, or the only string column there is.

A corpus with only one split gets a deterministic validation split carved out of it: 5% of its
documents, or, with fewer than 20 documents (a novel saved as one .txt, nanoGPT's shakespeare),
the last 5% of its text, cut at a line boundary. Either way every byte is in exactly one split,
so bits per byte stay exact.
"""

from __future__ import annotations

import codecs
import gzip
import hashlib
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from slm_tune.data import storyworld
from slm_tune.errors import UserError

VALIDATION_FRACTION = 0.05
SPLIT_SEED = 0
# 5% of 20 documents is one whole document; with fewer, a document split would put a large or
# empty share in validation, so the text is split by position instead.
MIN_DOCUMENTS_FOR_DOCUMENT_SPLIT = 20
# A file whose characters are more than this share replacement characters (bytes that are not
# UTF-8) or control characters is not a text file (a binary, or another encoding entirely).
NOT_TEXT_SHARE = 0.3
_COLUMN = re.compile(r"^(?P<spec>.+):column=(?P<column>[^:/\\]+)$")
if TYPE_CHECKING:  # imported where a corpus is read: a cached corpus never needs it (0.5 s)
    import datasets

_STORYWORLD_KEYS = {"train": storyworld.DEFAULT_TRAIN_STORIES,
                    "validation": storyworld.DEFAULT_VALIDATION_STORIES, "seed": 0,
                    "version": storyworld.UNVERSIONED, "entities": storyworld.DEFAULT_ENTITIES}


@dataclass
class Corpus:
    splits: datasets.DatasetDict
    info: dict[str, Any] = field(default_factory=dict)  # source, and entropy_bpb for storyworld


def _storyworld_args(spec: str) -> dict[str, int]:
    """The settings a storyworld spec names, over the defaults; `entities` only for version 2."""
    args = dict(_STORYWORLD_KEYS)
    _, _, rest = spec.partition(":")
    given = set()
    for part in filter(None, (p.strip() for p in rest.split(","))):
        key, sep, value = part.partition("=")
        if not sep or key not in args or not value.strip().isdigit():
            raise UserError(
                f"dataset {spec!r}: {part!r} is not one of train=N, validation=N, seed=N, version=N, entities=N; "
                "e.g. storyworld:version=2,train=2000,validation=200"
            )
        args[key] = int(value)
        given.add(key)
    if args["train"] < 1 or args["validation"] < 1:
        raise UserError(f"dataset {spec!r}: train and validation need at least 1 story each")
    if args["version"] not in storyworld.VERSIONS:
        raise UserError(f"dataset {spec!r}: storyworld has versions {', '.join(map(str, storyworld.VERSIONS))}, "
                        f"not {args['version']}")
    if args["version"] == 1:
        if "entities" in given:
            raise UserError(f"dataset {spec!r}: entities=N is a setting of storyworld version 2 (version=2)")
        del args["entities"]
    elif not 2 <= args["entities"] <= storyworld.MAX_ENTITIES:
        raise UserError(f"dataset {spec!r}: entities must be 2 to {storyworld.MAX_ENTITIES:,}")
    return args


def _hash_path(path: Path) -> str:
    h = hashlib.blake2b(digest_size=12)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for f in files:
        h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def split_column(spec: str) -> tuple[str, str | None]:
    """"hf:owner/name:column=story" -> ("hf:owner/name", "story"); no suffix -> (spec, None)."""
    m = _COLUMN.match(spec)
    return (m.group("spec"), m.group("column")) if m else (spec, None)


def corpus_fingerprint(spec: str) -> str:
    """What determines the corpus's content, cheaply: the token cache's key is built on it."""
    base, column = split_column(spec)
    if column is not None:
        return f"{corpus_fingerprint(base)}-column-{column}"
    if spec == "storyworld" or spec.startswith("storyworld:"):
        a = _storyworld_args(spec)
        world = f"-e{a['entities']}" if a["version"] > 1 else ""  # version 1's keys stay as they were
        return f"storyworld-v{a['version']}-t{a['train']}-v{a['validation']}-s{a['seed']}{world}"
    if spec == "tinystories" or spec.startswith("hf:"):
        return spec  # the Hub's datasets are versioned by their ids; datasets caches them itself
    path = Path(spec).expanduser()
    if not path.exists():
        raise UserError(
            f"dataset {spec!r} is not storyworld, tinystories, hf:owner/name or an existing path; "
            "check the path or use --dataset storyworld"
        )
    return f"path-{path.name}-{_hash_path(path)}"


def _read_bytes(path: Path) -> bytes:
    raw = path.read_bytes()
    if path.suffix.lower() != ".gz":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise UserError(f"dataset {str(path)!r} is not a readable gzip file ({e}); decompress it or give it "
                        "without .gz") from None


def decode_text(raw: bytes, name: str) -> tuple[str, int]:
    """A text file's bytes -> (text, how many byte sequences were not UTF-8 and were replaced).
    The byte-order mark goes, Windows (and old Mac) line endings become \\n."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    text = raw.decode("utf-8", errors="replace")
    replaced = text.count("\ufffd") - raw.count("\ufffd".encode("utf-8"))
    control = len(re.findall(r"[\x00-\x08\x0e-\x1f]", text))
    if text and (replaced + control) / len(text) > NOT_TEXT_SHARE:
        raise UserError(
            f"dataset {name!r} is mostly not text ({(replaced + control) / len(text):.0%} of its characters are "
            "not UTF-8 or are control characters); give a UTF-8 text file (convert it with iconv, say)")
    return text.replace("\r\n", "\n").replace("\r", "\n"), replaced


def texts(docs: list[str]) -> datasets.Dataset:
    import datasets

    return datasets.Dataset.from_dict({"text": docs}, features=datasets.Features({"text": datasets.Value("string")}))


def _read_txt(path: Path) -> tuple[datasets.Dataset, dict[str, Any]]:
    text, replaced = decode_text(_read_bytes(path), str(path))
    parts = text.split("<|endoftext|>") if "<|endoftext|>" in text else re.split(r"\n\s*\n", text)
    docs = [p.strip() for p in parts if p.strip()]
    return texts(docs), ({"replaced_bytes": replaced} if replaced else {})


def _file_kind(path: Path) -> tuple[str, bool]:
    """("".txt", compressed?) from names like c.txt, c.txt.gz, c.JSONL.gz."""
    suffixes = [x.lower() for x in path.suffixes]
    compressed = bool(suffixes) and suffixes[-1] == ".gz"
    kind = (suffixes[-2] if len(suffixes) > 1 else "") if compressed else (suffixes[-1] if suffixes else "")
    return kind, compressed


def _load_path(path: Path) -> tuple[datasets.DatasetDict | datasets.Dataset, dict[str, Any]]:
    import datasets

    if path.is_dir():
        try:
            return datasets.load_from_disk(str(path)), {}
        except FileNotFoundError:
            raise UserError(
                f"dataset directory {str(path)!r} was not written by datasets.save_to_disk; "
                "give a .txt, .jsonl, .json or .parquet file, or such a directory"
            ) from None
    kind, compressed = _file_kind(path)
    if kind == ".txt":
        return _read_txt(path)
    if kind in (".jsonl", ".json"):  # datasets reads .gz itself
        return datasets.load_dataset("json", data_files=str(path), split="train"), {}
    if kind == ".parquet" and not compressed:
        return datasets.load_dataset("parquet", data_files=str(path), split="train"), {}
    raise UserError(f"dataset {str(path)!r}: unknown file type {''.join(path.suffixes)!r}; use .txt, .jsonl, .json "
                    "(each also .gz) or .parquet")


def _load_hub(name: str, spec: str) -> datasets.DatasetDict:
    import datasets

    try:
        return datasets.load_dataset(name)
    except (ConnectionError, OSError, ValueError) as e:  # offline, unreachable, unknown id
        first = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise UserError(
            f"cannot load {spec!r} from the Hugging Face Hub ({first}); "
            "use --dataset storyworld (embedded, no download) or a local path"
        ) from None


def _is_string(feature: Any) -> bool:
    return getattr(feature, "dtype", None) in ("string", "large_string")


def _text_column(split: datasets.Dataset, spec: str, column: str | None) -> str:
    """The column that holds the documents: the one asked for, else "text", else the only string one."""
    columns = ", ".join(f"{n} ({'string' if _is_string(f) else getattr(f, 'dtype', type(f).__name__)})"
                        for n, f in split.features.items())
    strings = [n for n, f in split.features.items() if _is_string(f)]
    if column is not None:
        if column not in split.features:
            raise UserError(f"dataset {spec!r} has no column {column!r}; its columns are: {columns}")
        if not _is_string(split.features[column]):
            raise UserError(f"dataset {spec!r}: column {column!r} does not hold text; its columns are: {columns}")
        return column
    if "text" in split.features and _is_string(split.features["text"]):
        return "text"
    if len(strings) == 1:
        return strings[0]
    base = split_column(spec)[0]
    if not strings:
        raise UserError(f"dataset {spec!r} has no column of text; its columns are: {columns}")
    raise UserError(f"dataset {spec!r} has no 'text' column and several of text ({', '.join(strings)}); name one, "
                    f"e.g. --dataset {base}:column={strings[0]}")


def split_by_position(docs: list[str], share: float) -> tuple[list[str], list[str]]:
    """The first `share` of the text (in characters) and the rest, cut at the first line boundary
    after that point (or the last one before it; at the point itself in a text without line
    breaks). Documents stay whole except the one the cut falls in."""
    total = sum(len(d) for d in docs)
    target = min(max(1, round(total * share)), total - 1)
    seen = 0
    for i, doc in enumerate(docs):
        if seen + len(doc) > target:
            break
        seen += len(doc)
    at = target - seen
    newline = doc.find("\n", at)
    if newline == -1:
        newline = doc.rfind("\n", 0, at)
    cut = newline + 1 if newline != -1 else at
    head, tail = doc[:cut], doc[cut:]
    train = docs[:i] + ([head] if head.strip() else [])
    validation = ([tail] if tail.strip() else []) + docs[i + 1:]
    if not validation or not train:  # one line, cut at its end or start: cut at the point instead
        head, tail = doc[:at], doc[at:]
        train, validation = docs[:i] + [head], [tail] + docs[i + 1:]
    return train, validation


def _as_splits(loaded: datasets.DatasetDict | datasets.Dataset, spec: str, column: str | None = None
               ) -> tuple[datasets.DatasetDict, dict[str, Any]]:
    import datasets

    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    first = next(iter(loaded.values()))
    col = _text_column(first, spec, column)
    for name, split in loaded.items():
        if col not in split.features or not _is_string(split.features[col]):
            raise UserError(f"dataset {spec!r}: its {name} split has no text column {col!r}")
    loaded = datasets.DatasetDict({
        k: (v.select_columns([col]).rename_column(col, "text") if col != "text" else v.select_columns(["text"]))
        for k, v in loaded.items()})
    info: dict[str, Any] = {"column": col} if col != "text" else {}
    train = loaded.get("train") or next(iter(loaded.values()))
    validation = loaded.get("validation") or loaded.get("valid") or loaded.get("test")
    if validation is not None:
        info["split"] = {"by": "given"}
    else:
        docs = [t for t in train["text"] if t and t.strip()]
        if not docs:
            raise UserError(f"dataset {spec!r} has 0 document(s) with text; give a corpus with non-empty documents")
        if len(docs) >= MIN_DOCUMENTS_FOR_DOCUMENT_SPLIT:
            n_val = max(1, round(len(train) * VALIDATION_FRACTION))
            parts = train.train_test_split(test_size=n_val, seed=SPLIT_SEED, shuffle=True)
            train, validation = parts["train"], parts["test"]
            info["split"] = {"by": "document", "validation_share": VALIDATION_FRACTION, "documents": len(train) + n_val}
        else:
            if sum(len(d) for d in docs) < 2:
                raise UserError(f"dataset {spec!r} has too little text to split into training and validation")
            head, tail = split_by_position(docs, 1 - VALIDATION_FRACTION)
            train, validation = texts(head), texts(tail)
            info["split"] = {"by": "position", "validation_share": VALIDATION_FRACTION, "documents": len(docs),
                             "min_documents_for_document_split": MIN_DOCUMENTS_FOR_DOCUMENT_SPLIT}
    if sum(len(t) for t in train["text"][:1000]) == 0:
        raise UserError(f"dataset {spec!r} has no text; give a corpus with non-empty documents")
    return datasets.DatasetDict({"train": train, "validation": validation}), info


def describe_split(info: dict[str, Any]) -> str:
    """How the corpus was split, for the tokenizing line."""
    split = info.get("split", {})
    if split.get("by") == "position":
        return (f"validation is the last {split['validation_share']:.0%} of the text, cut at a line: "
                f"{split['documents']} document(s), too few to split by document")
    if split.get("by") == "document":
        return f"validation: {split['validation_share']:.0%} of {split['documents']} documents"
    return "its own validation split" if split.get("by") == "given" else ""


def load_corpus(spec: str) -> Corpus:
    """The corpus a dataset spec names, as train and validation splits with a text column."""
    import datasets

    if spec == "storyworld" or spec.startswith("storyworld:"):
        a = _storyworld_args(spec)
        train, validation = storyworld.generate_splits(a["train"], a["validation"], a["seed"], a["version"],
                                                       a.get("entities", storyworld.DEFAULT_ENTITIES))
        splits = datasets.DatasetDict({
            "train": datasets.Dataset.from_dict({"text": [s.text for s in train]}),
            "validation": datasets.Dataset.from_dict({"text": [s.text for s in validation]}),
        })
        info = {"source": "storyworld", "storyworld_version": a["version"], **a,
                "entropy_bpb": storyworld.entropy_bits_per_byte(validation), "split": {"by": "given"}}
        if a["version"] > 1:
            info["world_free_bpb"] = storyworld.world_free_bits_per_byte(validation)
        return Corpus(splits, info)
    base, column = split_column(spec)
    if base == "tinystories":
        splits, info = _as_splits(_load_hub("roneneldan/TinyStories", spec), spec, column)
        return Corpus(splits, {"source": spec, **info})
    if base.startswith("hf:"):
        name = base[3:]
        if "/" not in name and not name:
            raise UserError(f"dataset {spec!r}: write it as hf:owner/name")
        splits, info = _as_splits(_load_hub(name, spec), spec, column)
        return Corpus(splits, {"source": spec, **info})
    corpus_fingerprint(spec)  # raises the one-line error for a missing path
    path = Path(base).expanduser()
    loaded, read_info = _load_path(path)
    splits, info = _as_splits(loaded, spec, column)
    return Corpus(splits, {"source": str(path.resolve()), **read_info, **info})
