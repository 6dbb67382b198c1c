"""Text corpora by name, URL or path: `load_text("shakespeare")`.

Named corpora are downloaded once into the cache (checked against their sha256). To use a
copy you already have instead, either
  - set the corpus's own variable, e.g. EXPLORER_SHAKESPEARE=/path/to/input.txt, or
  - set EXPLORER_DATA_DIR to a folder laid out like the download cache
    (e.g. $EXPLORER_DATA_DIR/tinyshakespeare/input.txt).
"""
import hashlib
import os
from dataclasses import dataclass

from .download import DownloadError, cache_dir, fetch

DATA_DIR_ENV = "EXPLORER_DATA_DIR"


@dataclass(frozen=True)
class Corpus:
    name: str
    url: str
    sha256: str
    relpath: str          # where it lives under the cache (and under $EXPLORER_DATA_DIR)
    env: str              # variable naming a local copy
    description: str


CORPORA = {
    "shakespeare": Corpus(
        name="shakespeare",
        url="https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt",
        sha256="86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed",
        relpath=os.path.join("tinyshakespeare", "input.txt"),
        env="EXPLORER_SHAKESPEARE",
        description="Tiny Shakespeare: 1.1 MB of plays (char-rnn's corpus), 65 distinct characters",
    ),
}


def corpus_path(name):
    """The local file for a named corpus, downloading it into the cache if needed."""
    corpus = CORPORA[name]
    if os.environ.get(corpus.env):
        path = os.environ[corpus.env]
        if not os.path.isfile(path):
            raise FileNotFoundError(f"${corpus.env} is {path!r}, but there is no file there")
        return path
    if os.environ.get(DATA_DIR_ENV):
        path = os.path.join(os.environ[DATA_DIR_ENV], corpus.relpath)
        if os.path.isfile(path):
            return path
    target = os.path.join(cache_dir(), corpus.relpath)
    try:
        return fetch(corpus.url, target, sha256=corpus.sha256)
    except DownloadError as e:
        raise FileNotFoundError(
            f"the corpus {name!r} is not available offline: {e}\n"
            f"Alternatively set {corpus.env} to a local copy of {os.path.basename(corpus.relpath)}, "
            f"or {DATA_DIR_ENV} to a folder holding {corpus.relpath}.") from e


def url_cache_path(url):
    """Where a download from an arbitrary URL is cached: one file per URL."""
    digest = hashlib.sha1(url.encode("utf-8")).hexdigest()[:16]
    basename = os.path.basename(url.split("?")[0]) or "download"
    return os.path.join(cache_dir(), "downloads", f"{digest}-{basename}")


def load_text(source: str | os.PathLike[str], sha256: str | None = None, encoding: str = "utf-8") -> str:
    """The text of `source`: a corpus name (see CORPORA), an http(s) URL (downloaded once
    and cached; checked against `sha256` if given), or a local file path."""
    source = os.fspath(source)
    if source in CORPORA:
        path = corpus_path(source)
    elif source.startswith(("http://", "https://")):
        path = fetch(source, url_cache_path(source), sha256=sha256)
    elif os.path.isfile(source):
        path = source
    else:
        raise FileNotFoundError(f"{source!r} is not a file, a URL, or a corpus name "
                                f"(known names: {', '.join(sorted(CORPORA))})")
    with open(path, encoding=encoding) as f:
        return f.read()
