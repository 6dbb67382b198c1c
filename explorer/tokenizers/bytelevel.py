"""What GPT-2's byte-level BPE is built from: the split pattern, a printable spelling of
bytes, and a tokenizer class that lets tiktoken do the encoding.

Byte-level BPE starts from the 256 possible bytes of UTF-8 text, so any string can be
encoded and nothing is ever "unknown". Learned merges then glue frequent neighbours into
longer tokens. Before merging, text is cut into chunks by a regular expression (words with
their leading space, runs of digits, runs of punctuation, whitespace), and merges never cross
a chunk boundary: " the" can become one token, "e t" cannot.
"""
import tiktoken

from .base import TokenIds, Tokenizer

#: GPT-2's pre-tokenization pattern: English contractions, then letters, digits or other
#: symbols each with an optional leading space, then whitespace. (\p{L}: any letter.)
GPT2_SPLIT_PATTERN = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
                      r"""|\s+(?!\S)|\s+""")


def _byte_to_char_table():
    """GPT-2's files spell every byte as one visible character, so a merge like b" t" + b"he"
    can be written on a line as "Ġt he" (the space byte 0x20 is spelled "Ġ").

    Bytes that already print as themselves (Latin-1 '!'..'~', '¡'..'¬', '®'..'ÿ') keep their
    own character; the other 68 (control codes, space, ...) get chr(256), chr(257), ... in
    byte order. Returns the list of 256 characters, and the byte order in which GPT-2 numbers
    its single-byte tokens (the printable ones first)."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
                 *range(ord("®"), ord("ÿ") + 1)]
    others = [b for b in range(256) if b not in set(printable)]
    char_of = [""] * 256
    for b in printable:
        char_of[b] = chr(b)
    for n, b in enumerate(others):
        char_of[b] = chr(256 + n)
    return char_of, printable + others


BYTE_TO_CHAR, GPT2_BYTE_ORDER = _byte_to_char_table()
CHAR_TO_BYTE = {ch: b for b, ch in enumerate(BYTE_TO_CHAR)}


def bytes_to_printable(token: bytes) -> str:
    """b" the" -> "Ġthe": the spelling used in vocab.bpe-style merge files."""
    return "".join(BYTE_TO_CHAR[b] for b in token)


def printable_to_bytes(spelled: str) -> bytes:
    """Inverse of bytes_to_printable; a ValueError for characters that spell no byte."""
    try:
        return bytes(CHAR_TO_BYTE[ch] for ch in spelled)
    except KeyError as e:
        raise ValueError(f"{spelled!r} contains {e.args[0]!r}, which is not the spelling of any "
                         f"byte in GPT-2's byte-to-character table") from None


def display_bytes(token: bytes) -> str:
    """A token's bytes as text for display; bytes that are only part of a UTF-8 character
    (tokens can split one) are shown escaped, e.g. '\\xe2\\x80'."""
    try:
        return token.decode("utf-8")
    except UnicodeDecodeError:
        return token.decode("utf-8", errors="backslashreplace")


class TiktokenTokenizer(Tokenizer):
    """A tokenizer whose encoding is a tiktoken.Encoding (fast Rust BPE)."""

    def __init__(self, encoding: tiktoken.Encoding) -> None:
        self.encoding = encoding

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    def encode(self, text: str) -> list[int]:
        # special tokens such as <|endoftext|> written in the text become their single id
        return self.encoding.encode(text, allowed_special="all")

    def decode(self, ids: TokenIds) -> str:
        # ids may end inside a multi-byte character: show U+FFFD there rather than fail
        return self.encoding.decode(self._check_ids(ids), errors="replace")

    def token_bytes(self, token_id: int) -> bytes:
        """The exact bytes one token stands for."""
        return self.encoding.decode_single_token_bytes(self._check_ids([token_id])[0])

    def token_strings(self, ids: TokenIds) -> list[str]:
        return [display_bytes(self.token_bytes(i)) for i in ids]
