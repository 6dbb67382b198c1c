"""GPT-2's tokenizer (50,257 byte-level BPE tokens), encoded by tiktoken, loadable offline.

    tok = GPT2Tokenizer()                     # finds or downloads vocab.bpe + encoder.json
    tok.encode("hello world")                 # -> [31373, 995]
    GPT2Tokenizer(vocab_bpe="gpt2/vocab.bpe", encoder_json="gpt2/encoder.json")  # your copies

GPT-2 was released with two files: `vocab.bpe`, its 50,000 merges in order (line i says
"merge these two tokens into token 256 + i"), and `encoder.json`, a map from every token
(spelled with GPT-2's byte-to-character table) to its id. We read the merges into tiktoken's
"mergeable ranks" (token bytes -> id) and check them against encoder.json.

Where the files are looked for, in this order:
  1. the paths you pass (vocab_bpe=..., encoder_json=...);
  2. the folder in $EXPLORER_GPT2_DIR;
  3. tiktoken's cache ($TIKTOKEN_CACHE_DIR, else $DATA_GYM_CACHE_DIR, else
     <tmp>/data-gym-cache), under the names tiktoken gives them (sha1 of the URL);
  4. <explorer cache>/gpt2/ (see explorer.data.cache_dir());
  5. a download from OpenAI into 4. If that fails, the error says which files to put where.
"""
import hashlib
import json
import os
import tempfile

import tiktoken

from .bytelevel import GPT2_BYTE_ORDER, GPT2_SPLIT_PATTERN, TiktokenTokenizer, printable_to_bytes

BASE_URL = "https://openaipublic.blob.core.windows.net/gpt-2/encodings/main/"
#: file name -> sha256 of the published file (the values tiktoken checks too)
FILES = {
    "vocab.bpe": "1ce1664773c50f3e0cc8842619a93edc4624525b728b188a9e0be33b7726adc5",
    "encoder.json": "196139668be63f3b5d6574427317ae82f612a97c5d1cdaf36ed2256dbf636783",
}
END_OF_TEXT = "<|endoftext|>"
END_OF_TEXT_ID = 50256

# (vocab_bpe path, encoder_json path) -> mergeable ranks
_ranks_cache: dict[tuple[str, str], dict[bytes, int]] = {}


def tiktoken_cache_dir():
    """The folder tiktoken caches downloads in (it reads these variables the same way)."""
    for var in ("TIKTOKEN_CACHE_DIR", "DATA_GYM_CACHE_DIR"):
        if var in os.environ:
            return os.environ[var]
    return os.path.join(tempfile.gettempdir(), "data-gym-cache")


def tiktoken_cache_name(filename):
    """tiktoken stores a download under the sha1 of its URL."""
    return hashlib.sha1((BASE_URL + filename).encode()).hexdigest()


def _read_checked(path, filename):
    """The bytes of `path`, which must be GPT-2's published `filename`."""
    with open(path, "rb") as f:
        data = f.read()
    actual = hashlib.sha256(data).hexdigest()
    if actual != FILES[filename]:
        raise ValueError(f"{path} is not GPT-2's {filename}: its sha256 is {actual}, expected "
                         f"{FILES[filename]} (a truncated or different file?)")
    return data


def mergeable_ranks_from_files(vocab_bpe, encoder_json):
    """tiktoken's {token bytes: id} for GPT-2, from local vocab.bpe and encoder.json."""
    key = (os.path.abspath(vocab_bpe), os.path.abspath(encoder_json))
    if key in _ranks_cache:
        return _ranks_cache[key]
    merges_text = _read_checked(vocab_bpe, "vocab.bpe").decode("utf-8")
    # ids 0..255: single bytes, in GPT-2's order (printable bytes first)
    ranks = {bytes([b]): rank for rank, b in enumerate(GPT2_BYTE_ORDER)}
    # then one id per merge line, in file order; the first line is a "#version" header
    for line in merges_text.split("\n")[1:]:
        if line:
            left, right = line.split(" ")
            ranks[printable_to_bytes(left) + printable_to_bytes(right)] = len(ranks)
    # encoder.json must agree, id for id: tiktoken's ids ARE the merge priorities
    encoder = json.loads(_read_checked(encoder_json, "encoder.json"))
    expected = {printable_to_bytes(tok): i for tok, i in encoder.items() if tok != END_OF_TEXT}
    if expected != ranks or encoder.get(END_OF_TEXT) != END_OF_TEXT_ID:
        raise ValueError(f"{vocab_bpe} and {encoder_json} disagree about token ids")
    _ranks_cache[key] = ranks
    return ranks


def encoding_from_files(vocab_bpe, encoder_json):
    """A tiktoken.Encoding equal to tiktoken.get_encoding("gpt2"), without any network."""
    return tiktoken.Encoding(
        name="gpt2", pat_str=GPT2_SPLIT_PATTERN,
        mergeable_ranks=mergeable_ranks_from_files(vocab_bpe, encoder_json),
        special_tokens={END_OF_TEXT: END_OF_TEXT_ID}, explicit_n_vocab=50257)


def find_gpt2_files():
    """(vocab.bpe path, encoder.json path) of local copies (steps 2-4 above), or None."""
    candidates = []
    if os.environ.get("EXPLORER_GPT2_DIR"):
        folder = os.environ["EXPLORER_GPT2_DIR"]
        candidates.append((os.path.join(folder, "vocab.bpe"), os.path.join(folder, "encoder.json")))
    tk = tiktoken_cache_dir()
    if tk:
        candidates.append((os.path.join(tk, tiktoken_cache_name("vocab.bpe")),
                           os.path.join(tk, tiktoken_cache_name("encoder.json"))))
    candidates.append(_explorer_paths())
    for pair in candidates:
        if all(os.path.isfile(p) for p in pair):
            return pair
    return None


def _explorer_paths():
    from ..data.download import cache_dir
    folder = os.path.join(cache_dir(), "gpt2")
    return os.path.join(folder, "vocab.bpe"), os.path.join(folder, "encoder.json")


def missing_files_message(reason):
    vocab_path, encoder_path = _explorer_paths()
    tk = tiktoken_cache_dir() or "<TIKTOKEN_CACHE_DIR>"
    return (
        f"GPT-2's tokenizer needs two files, vocab.bpe and encoder.json (published at "
        f"{BASE_URL}), and none were found locally; downloading them failed ({reason}).\n"
        f"Do one of:\n"
        f"  - put them at {vocab_path} and {encoder_path};\n"
        f"  - pass GPT2Tokenizer(vocab_bpe=..., encoder_json=...), or set EXPLORER_GPT2_DIR to a "
        f"folder holding vocab.bpe and encoder.json;\n"
        f"  - put tiktoken's cached copies in {tk} (or set TIKTOKEN_CACHE_DIR): vocab.bpe named "
        f"{tiktoken_cache_name('vocab.bpe')} and encoder.json named "
        f"{tiktoken_cache_name('encoder.json')}.")


def download_gpt2_files():
    """Fetch both files into <explorer cache>/gpt2/ (checksummed); their paths."""
    from ..data.download import DownloadError, fetch
    paths = _explorer_paths()
    try:
        for name, path in zip(("vocab.bpe", "encoder.json"), paths):
            fetch(BASE_URL + name, path, sha256=FILES[name])
    except DownloadError as e:
        raise FileNotFoundError(missing_files_message(e.reason)) from e
    return paths


class GPT2Tokenizer(TiktokenTokenizer):
    kind = "gpt2"

    def __init__(self, vocab_bpe: str | os.PathLike[str] | None = None,
                 encoder_json: str | os.PathLike[str] | None = None, download: bool = True) -> None:
        """Pass both paths to use your own copies of the files, or neither to search for
        them (and, with download=True, fetch them once)."""
        if (vocab_bpe is None) != (encoder_json is None):
            raise ValueError("pass both vocab_bpe and encoder_json, or neither; got "
                             f"vocab_bpe={vocab_bpe!r}, encoder_json={encoder_json!r}")
        paths = None if vocab_bpe is None or encoder_json is None else (vocab_bpe, encoder_json)
        self.explicit_paths = paths is not None
        if paths is not None:
            for path in paths:
                if not os.path.isfile(path):
                    raise FileNotFoundError(f"GPT-2 tokenizer file not found: {path}")
        else:
            paths = find_gpt2_files()
            if paths is None:
                if not download:
                    raise FileNotFoundError(missing_files_message("download=False"))
                paths = download_gpt2_files()
        self.vocab_bpe, self.encoder_json = (os.fspath(p) for p in paths)
        super().__init__(encoding_from_files(self.vocab_bpe, self.encoder_json))

    def to_dict(self) -> dict:
        # only paths the user chose are worth keeping; otherwise search again when loading
        if self.explicit_paths:
            return {"type": self.kind, "vocab_bpe": self.vocab_bpe, "encoder_json": self.encoder_json}
        return {"type": self.kind}

    @classmethod
    def from_dict(cls, d: dict) -> "GPT2Tokenizer":
        paths = d.get("vocab_bpe"), d.get("encoder_json")
        if all(p and os.path.isfile(p) for p in paths):
            return cls(*paths)
        return cls()  # saved on another machine: look for the files here

    def cache_key(self) -> str:
        return "gpt2"  # the files are checksummed, so every copy encodes identically

    def __repr__(self):
        return f"GPT2Tokenizer(vocab_size={self.vocab_size}, vocab_bpe={self.vocab_bpe!r})"
