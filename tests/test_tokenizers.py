"""Tokenizers: character-level, GPT-2 (from local files, offline), and the trained BPE."""
import json
import os
import socket
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.tokenizers import (
    GPT2_SPLIT_PATTERN,
    BPETokenizer,
    CharTokenizer,
    GPT2Tokenizer,
    get_tokenizer,
    tokenizer_from_dict,
    train_bpe,
)
from explorer.tokenizers import gpt2 as gpt2_module

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"
GPT2_DIR = SHARED / "gpt2"
SHAKESPEARE = SHARED / "tinyshakespeare" / "input.txt"
needs_gpt2_files = pytest.mark.skipif(not (GPT2_DIR / "vocab.bpe").is_file(),
                                      reason=f"GPT-2 tokenizer files not found in {GPT2_DIR}")
needs_shakespeare = pytest.mark.skipif(not SHAKESPEARE.is_file(),
                                       reason=f"Tiny Shakespeare not found at {SHAKESPEARE}")

# a small multilingual corpus, so BPE tests do not need any file
CORPUS = ("The quick brown fox jumps over the lazy dog. The dog sleeps; the fox runs!\n"
          "Der schnelle braune Fuchs springt über den faulen Hund. Größe, Maß, Straße.\n"
          "Η γρήγορη καφέ αλεπού πηδά πάνω από τον τεμπέλη σκύλο.\n"
          "敏捷的棕色狐狸跳过了懒狗。 🦊🐕 1234 5678 + 90 = 7002\n") * 20


# --------------------------------------------------------------------- no network
class NetworkDisabled(OSError):
    pass


@pytest.fixture
def no_network(monkeypatch):
    """Any attempt to open a connection raises (urllib, requests and tiktoken all go through
    socket.create_connection or socket.connect)."""
    def refuse(*args, **kwargs):
        raise NetworkDisabled("network access is disabled in this test")
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    monkeypatch.setattr("explorer.data.download.time.sleep", lambda s: None)  # no retry waits


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Point every place the GPT-2 files could be found at empty folders."""
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(tmp_path / "explorer-cache"))
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    monkeypatch.delenv("EXPLORER_GPT2_DIR", raising=False)
    gpt2_module._ranks_cache.clear()
    return tmp_path


# --------------------------------------------------------------------- char
def test_char_tokenizer_round_trip_and_alphabet():
    tok = CharTokenizer.from_text("hello world")
    assert tok.alphabet == " dehlorw"
    assert tok.vocab_size == 8
    ids = tok.encode("hello world")
    assert ids == [3, 2, 4, 4, 5, 0, 7, 5, 6, 4, 1]
    assert tok.decode(ids) == "hello world"
    assert tok.token_strings([3, 0]) == ["h", " "]
    assert list(tok.encode_array("hello world")) == ids


def test_char_tokenizer_unknown_character_names_it_and_its_position():
    tok = CharTokenizer.from_text("abc")
    with pytest.raises(ValueError, match=r"'z'.*position 2"):
        tok.encode("abz")
    with pytest.raises(ValueError, match=r"'é'.*position 1"):
        tok.encode_array("aé")
    with pytest.raises(ValueError, match="token id 3"):
        tok.decode([0, 3])


def test_char_tokenizer_rejects_repeated_alphabet():
    with pytest.raises(ValueError, match="repeats"):
        CharTokenizer("abca")


def test_char_tokenizer_to_dict_is_json_and_round_trips():
    tok = CharTokenizer.from_text("To be, or not to be\n")
    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert isinstance(again, CharTokenizer) and again.alphabet == tok.alphabet


# --------------------------------------------------------------------- GPT-2
@needs_gpt2_files
def test_gpt2_from_local_files_without_network(no_network, empty_caches):
    tok = GPT2Tokenizer(vocab_bpe=str(GPT2_DIR / "vocab.bpe"),
                        encoder_json=str(GPT2_DIR / "encoder.json"))
    assert tok.encode("hello world") == [31373, 995]
    assert tok.vocab_size == 50257
    assert tok.encode("<|endoftext|>") == [50256]
    assert tok.token_strings([31373, 995]) == ["hello", " world"]
    text = "Hello, wörld! 123 ünïcödé 🦊\n\n  spaces"
    assert tok.decode(tok.encode(text)) == text
    again = tokenizer_from_dict(json.loads(json.dumps(tok.to_dict())))
    assert again.encode("hello world") == [31373, 995]


@needs_gpt2_files
def test_gpt2_local_files_match_tiktoken_exactly(monkeypatch, no_network):
    """Our loader of vocab.bpe + encoder.json builds the same encoding as tiktoken's own
    "gpt2" (read here from its cache folder, so also without network)."""
    import tiktoken
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken_cache"))
    reference = tiktoken.get_encoding("gpt2")
    tok = GPT2Tokenizer(vocab_bpe=str(GPT2_DIR / "vocab.bpe"),
                        encoder_json=str(GPT2_DIR / "encoder.json"))
    assert tok.encoding._mergeable_ranks == reference._mergeable_ranks
    text = CORPUS + "It's 3.14159 -- isn't it? They'll've   \t tabs\n"
    assert tok.encode(text) == reference.encode(text)


@needs_gpt2_files
def test_gpt2_found_through_tiktoken_cache_dir(no_network, empty_caches, monkeypatch):
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(SHARED / "tiktoken_cache"))
    assert GPT2Tokenizer().encode("hello world") == [31373, 995]


@needs_gpt2_files
def test_gpt2_found_through_explorer_gpt2_dir(no_network, empty_caches, monkeypatch):
    monkeypatch.setenv("EXPLORER_GPT2_DIR", str(GPT2_DIR))
    assert get_tokenizer("gpt2").encode("hello world") == [31373, 995]


def test_gpt2_offline_without_files_says_which_files_to_put_where(no_network, empty_caches):
    with pytest.raises(FileNotFoundError) as info:
        GPT2Tokenizer()
    message = str(info.value)
    explorer_dir = empty_caches / "explorer-cache" / "gpt2"
    assert str(explorer_dir / "vocab.bpe") in message
    assert str(explorer_dir / "encoder.json") in message
    assert "EXPLORER_GPT2_DIR" in message and "TIKTOKEN_CACHE_DIR" in message
    # tiktoken's cache names: the sha1 of each file's URL
    assert "6d1cbeee0f20b3d9449abfede4726ed8212e3aee" in message
    assert "6c7ea1a7e38e3a7f062df639a5b80947f075ffe6" in message
    assert not explorer_dir.exists() or not any(explorer_dir.iterdir())  # no partial files


def test_gpt2_rejects_a_file_that_is_not_gpt2s(tmp_path, empty_caches):
    fake = tmp_path / "vocab.bpe"
    fake.write_text("#version: 0.2\nĠ t\n")
    (tmp_path / "encoder.json").write_text("{}")
    with pytest.raises(ValueError, match="sha256"):
        GPT2Tokenizer(vocab_bpe=str(fake), encoder_json=str(tmp_path / "encoder.json"))


def test_gpt2_needs_both_paths_or_neither():
    with pytest.raises(ValueError, match="both"):
        GPT2Tokenizer(vocab_bpe="vocab.bpe")


# --------------------------------------------------------------------- trained BPE
def reference_bpe_merges(text, num_merges):
    """Plain BPE training, written for clarity: recount every pair after every merge.
    Tokens are bytes objects; ties go to the pair whose (left, right) bytes sort first."""
    words = Counter(tuple(bytes([b]) for b in chunk.encode("utf-8"))
                    for chunk in regex.findall(GPT2_SPLIT_PATTERN, text))
    vocab = {bytes([b]) for b in range(256)}
    merges = []
    while len(merges) < num_merges:
        counts = Counter()
        for word, freq in words.items():
            for pair in zip(word, word[1:]):
                counts[pair] += freq
        if not counts:
            break
        best = min(counts, key=lambda pair: (-counts[pair], pair))
        if best[0] + best[1] not in vocab:  # the same bytes may already be a token
            vocab.add(best[0] + best[1])
            merges.append(best)
        new_words = Counter()
        for word, freq in words.items():
            out, i = [], 0
            while i < len(word):
                if i + 1 < len(word) and (word[i], word[i + 1]) == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            new_words[tuple(out)] += freq
        words = new_words
    return merges


def encode_by_merges(tok, text):
    """Encode by applying the learned merges in order (lowest rank first): what BPE
    encoding means, independently of tiktoken."""
    rank = {left + right: 256 + i for i, (left, right) in enumerate(tok.merges)}
    ids = []
    for chunk in regex.findall(GPT2_SPLIT_PATTERN, text):
        parts = [bytes([b]) for b in chunk.encode("utf-8")]
        while True:
            candidates = [(rank.get(a + b, np.inf), i) for i, (a, b) in enumerate(zip(parts, parts[1:]))]
            best_rank, i = min(candidates, default=(np.inf, 0))
            if best_rank == np.inf:
                break
            parts[i:i + 2] = [parts[i] + parts[i + 1]]
        ids += [rank[p] if len(p) > 1 else p[0] for p in parts]
    return ids


@pytest.fixture(scope="module")
def corpus_bpe():
    return train_bpe(CORPUS, vocab_size=400)


def test_bpe_merges_match_reference_implementation():
    tok = train_bpe(CORPUS, vocab_size=256 + 60)
    assert tok.merges == reference_bpe_merges(CORPUS, 60)
    assert tok.vocab_size == 256 + 60


@needs_shakespeare
def test_bpe_first_merges_on_shakespeare_match_reference():
    text = SHAKESPEARE.read_text()[:100_000]
    tok = train_bpe(text, vocab_size=256 + 30)
    assert tok.merges == reference_bpe_merges(text, 30)
    assert tok.merges[0] == (b" ", b"t")  # the most frequent pair of Shakespeare's bytes


def test_bpe_encoding_applies_the_merges_in_order(corpus_bpe):
    text = CORPUS[:600] + " the fox jumped over the dogs; Straßenfüchse"
    assert corpus_bpe.encode(text) == encode_by_merges(corpus_bpe, text)
    assert len(corpus_bpe.encode(text)) < len(text.encode("utf-8"))  # it does compress


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",))))  # surrogates: not UTF-8
def test_bpe_round_trips_any_unicode(corpus_bpe, text):
    ids = corpus_bpe.encode(text)
    assert all(0 <= i < corpus_bpe.vocab_size for i in ids)
    assert corpus_bpe.decode(ids) == text


def test_bpe_save_and_load_round_trip(corpus_bpe, tmp_path):
    path = corpus_bpe.save(tmp_path / "sub" / "my.bpe")
    text = Path(path).read_text(encoding="utf-8")
    assert text.startswith("#version")
    assert len(text.splitlines()) == 1 + len(corpus_bpe.merges)  # header + one merge per line
    loaded = BPETokenizer.load(path)
    assert loaded.merges == corpus_bpe.merges
    assert loaded.encode(CORPUS[:300]) == corpus_bpe.encode(CORPUS[:300])
    assert get_tokenizer(str(path)).merges == corpus_bpe.merges
    again = tokenizer_from_dict(json.loads(json.dumps(corpus_bpe.to_dict())))
    assert again.merges == corpus_bpe.merges
    assert os.listdir(tmp_path / "sub") == ["my.bpe"]  # no temporary file left behind


def test_bpe_describe_merges_and_token_strings(corpus_bpe):
    first = corpus_bpe.describe_merges(3).splitlines()
    assert len(first) == 3 and first[0].startswith("256: ")
    left, right = corpus_bpe.merges[0]
    assert corpus_bpe.token_strings([256]) == [(left + right).decode("utf-8", "backslashreplace")]
    # a token holding part of a multi-byte character shows escaped bytes, not a crash
    assert corpus_bpe.token_strings([0xE2]) == ["\\xe2"]


def test_bpe_rejects_bad_inputs(tmp_path):
    with pytest.raises(ValueError, match=">= 256"):
        train_bpe("abc", vocab_size=100)
    bad = tmp_path / "bad.bpe"
    bad.write_text("no header\n")
    with pytest.raises(ValueError, match="#version"):
        BPETokenizer.load(bad)
    with pytest.raises(ValueError, match="already token"):
        BPETokenizer([(b"a", b"b"), (b"a", b"b")])


def test_bpe_stops_when_no_pairs_are_left():
    tok = train_bpe("ab ab", vocab_size=1000)
    assert tok.vocab_size == 256 + len(tok.merges) < 1000
    assert tok.decode(tok.encode("ab ab")) == "ab ab"


def test_get_tokenizer_specs():
    assert isinstance(get_tokenizer("char", text="abc"), CharTokenizer)
    assert get_tokenizer("bpe:260", text=CORPUS).vocab_size == 260
    with pytest.raises(ValueError, match="unknown tokenizer"):
        get_tokenizer("word")
    with pytest.raises(ValueError, match="'type'"):
        tokenizer_from_dict({"type": "sentencepiece"})
