"""Downloads against a local HTTP server on 127.0.0.1: checksums, retries, the cache."""
import dataclasses
import hashlib
import http.server
import os
import threading

import pytest

from explorer.data import ChecksumError, DownloadError, corpora, fetch, load_text

CONTENT = ("First Citizen:\nBefore we proceed any further, hear me speak.\n" * 50).encode()
SHA = hashlib.sha256(CONTENT).hexdigest()


class Handler(http.server.BaseHTTPRequestHandler):
    """Serves CONTENT at /ok.txt; /flaky.txt drops the connection half way the first
    `server.failures_left` times; /missing.txt is a 404. Counts requests per path."""

    def do_GET(self):
        server = self.server
        server.requests[self.path] = server.requests.get(self.path, 0) + 1
        if self.path == "/missing.txt":
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(CONTENT)))
        self.end_headers()
        if self.path == "/flaky.txt" and server.failures_left > 0:
            server.failures_left -= 1
            self.wfile.write(CONTENT[:len(CONTENT) // 2])   # then hang up
            self.close_connection = True
            return
        self.wfile.write(CONTENT)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.requests, httpd.failures_left = {}, 0
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    httpd.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield httpd
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("EXPLORER_CACHE_DIR", str(tmp_path / "cache"))
    for var in ("EXPLORER_SHAKESPEARE", "EXPLORER_DATA_DIR"):
        monkeypatch.delenv(var, raising=False)
    return tmp_path / "cache"


def test_fetch_downloads_once_and_verifies(server, tmp_path):
    dest = tmp_path / "files" / "ok.txt"
    assert fetch(server.url + "/ok.txt", dest, sha256=SHA) == str(dest)
    assert dest.read_bytes() == CONTENT
    fetch(server.url + "/ok.txt", dest, sha256=SHA)
    assert server.requests["/ok.txt"] == 1        # the second call used the cached file
    assert os.listdir(dest.parent) == ["ok.txt"]  # no temporary files left


def test_checksum_mismatch_raises_and_leaves_no_file(server, tmp_path):
    dest = tmp_path / "ok.txt"
    wrong = "0" * 64
    with pytest.raises(ChecksumError, match=SHA):
        fetch(server.url + "/ok.txt", dest, sha256=wrong, backoff=0)
    assert not dest.exists()
    assert os.listdir(tmp_path) == []  # neither the file nor a partial download
    assert server.requests["/ok.txt"] == 1   # a complete but wrong file is not retried


def test_interrupted_download_is_retried(server, tmp_path):
    server.failures_left = 2
    dest = tmp_path / "flaky.txt"
    fetch(server.url + "/flaky.txt", dest, sha256=SHA, retries=3, backoff=0)
    assert dest.read_bytes() == CONTENT
    assert server.requests["/flaky.txt"] == 3
    assert os.listdir(tmp_path) == ["flaky.txt"]


def test_interrupted_download_without_checksum_is_still_detected(server, tmp_path):
    """The server promised Content-Length bytes; fewer arrived: that is not a finished file."""
    server.failures_left = 10
    dest = tmp_path / "flaky.txt"
    with pytest.raises(DownloadError, match="connection closed after"):
        fetch(server.url + "/flaky.txt", dest, retries=2, backoff=0)
    assert server.requests["/flaky.txt"] == 3
    assert not dest.exists() and os.listdir(tmp_path) == []


def test_a_corrupt_cached_file_is_replaced(server, tmp_path):
    dest = tmp_path / "ok.txt"
    dest.write_bytes(CONTENT[:10])
    fetch(server.url + "/ok.txt", dest, sha256=SHA)
    assert dest.read_bytes() == CONTENT


def test_http_404_is_not_retried_and_explains(server, tmp_path):
    dest = tmp_path / "missing.txt"
    with pytest.raises(DownloadError) as info:
        fetch(server.url + "/missing.txt", dest, retries=3, backoff=0)
    assert server.requests["/missing.txt"] == 1
    assert "404" in str(info.value) and str(dest) in str(info.value)


def test_unreachable_server_gives_an_offline_message(tmp_path):
    # a port nobody listens on: bind one, then close it
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dest = tmp_path / "input.txt"
    url = f"http://127.0.0.1:{port}/input.txt"
    with pytest.raises(DownloadError) as info:
        fetch(url, dest, sha256=SHA, retries=1, backoff=0, timeout=5)
    message = str(info.value)
    assert url in message and str(dest) in message and SHA in message


def test_load_text_from_url_is_cached(server, cache):
    text = load_text(server.url + "/ok.txt", sha256=SHA)
    assert text == CONTENT.decode()
    assert load_text(server.url + "/ok.txt", sha256=SHA) == text
    assert server.requests["/ok.txt"] == 1
    assert any(name.endswith("ok.txt") for name in os.listdir(cache / "downloads"))


def test_named_corpus_downloads_into_the_cache(server, cache, monkeypatch):
    fake = dataclasses.replace(corpora.CORPORA["shakespeare"], url=server.url + "/ok.txt", sha256=SHA)
    monkeypatch.setitem(corpora.CORPORA, "shakespeare", fake)
    assert load_text("shakespeare") == CONTENT.decode()
    assert (cache / "tinyshakespeare" / "input.txt").read_bytes() == CONTENT


def test_named_corpus_offline_names_the_file_and_the_overrides(cache, monkeypatch):
    fake = dataclasses.replace(corpora.CORPORA["shakespeare"], url="http://127.0.0.1:9/input.txt")
    monkeypatch.setitem(corpora.CORPORA, "shakespeare", fake)
    monkeypatch.setattr("explorer.data.download.time.sleep", lambda s: None)
    with pytest.raises(FileNotFoundError) as info:
        load_text("shakespeare")
    message = str(info.value)
    assert str(cache / "tinyshakespeare" / "input.txt") in message
    assert "EXPLORER_SHAKESPEARE" in message and "EXPLORER_DATA_DIR" in message


def test_local_overrides(cache, tmp_path, monkeypatch):
    copy = tmp_path / "my_shakespeare.txt"
    copy.write_text("To be, or not to be")
    monkeypatch.setenv("EXPLORER_SHAKESPEARE", str(copy))
    assert load_text("shakespeare") == "To be, or not to be"
    monkeypatch.delenv("EXPLORER_SHAKESPEARE")
    (tmp_path / "data" / "tinyshakespeare").mkdir(parents=True)
    (tmp_path / "data" / "tinyshakespeare" / "input.txt").write_text("That is the question")
    monkeypatch.setenv("EXPLORER_DATA_DIR", str(tmp_path / "data"))
    assert load_text("shakespeare") == "That is the question"
    assert load_text(copy) == "To be, or not to be"   # a plain path
    with pytest.raises(FileNotFoundError, match="not a file, a URL, or a corpus name"):
        load_text("no-such-corpus")
