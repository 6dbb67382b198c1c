"""Download a file once, check it, keep it: the package's little cache.

    path = fetch(url, "~/.cache/.../input.txt", sha256="86c4...")

A file is written to a temporary name next to its destination and renamed into place only
after its sha256 matched, so the cache never holds a half-written or wrong file. Network
hiccups (a refused connection, a timeout, a connection that drops half way) are retried a
few times; a checksum mismatch on a complete download is not (the server sends a different
file, and asking again will not change that).
"""
import hashlib
import os
import socket
import tempfile
import time
import urllib.error
import urllib.request

#: where downloads and token caches live; override with $EXPLORER_CACHE_DIR
CACHE_ENV = "EXPLORER_CACHE_DIR"


class DownloadError(OSError):
    """A file could not be fetched. `reason` is the last error, in words."""

    def __init__(self, message, reason=""):
        super().__init__(message)
        self.reason = reason or message


class ChecksumError(DownloadError):
    """The downloaded bytes are not the expected file."""


class _IncompleteDownload(Exception):
    pass


def cache_dir():
    """$EXPLORER_CACHE_DIR, else the platform's user cache folder + /transformer-explorer."""
    if os.environ.get(CACHE_ENV):
        return os.path.abspath(os.path.expanduser(os.environ[CACHE_ENV]))
    if os.name == "nt":
        base = os.environ.get("LOCALAPPDATA", os.path.expanduser("~"))
    elif os.uname().sysname == "Darwin":
        base = os.path.expanduser("~/Library/Caches")
    else:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
    return os.path.join(base, "transformer-explorer")


def sha256_of_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _download_once(url, tmp_path, timeout):
    """Stream url into tmp_path; returns its sha256. Raises _IncompleteDownload if the
    server promised more bytes (Content-Length) than arrived."""
    h, received = hashlib.sha256(), 0
    request = urllib.request.Request(url, headers={"User-Agent": "transformer-explorer"})
    with urllib.request.urlopen(request, timeout=timeout) as response, open(tmp_path, "wb") as out:
        expected = response.headers.get("Content-Length")
        for block in iter(lambda: response.read(1 << 16), b""):
            out.write(block)
            h.update(block)
            received += len(block)
    if expected is not None and received != int(expected):
        raise _IncompleteDownload(f"connection closed after {received} of {expected} bytes")
    return h.hexdigest()


def fetch(url, path, sha256=None, retries=3, timeout=30.0, backoff=1.0):
    """`path`, downloading `url` to it first unless a good copy is already there.

    With `sha256`, an existing file must match it (else it is fetched again) and a download
    must match it (else ChecksumError, and nothing is left at `path`). Network errors are
    retried `retries` times, waiting backoff, 2*backoff, ... seconds in between; after that a
    DownloadError says what failed and where to put the file by hand."""
    path = os.path.abspath(os.path.expanduser(path))
    if os.path.isfile(path) and (sha256 is None or sha256_of_file(path) == sha256):
        return path
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    last_error = None
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        fd, tmp = tempfile.mkstemp(dir=folder, prefix="." + os.path.basename(path) + ".",
                                   suffix=".part")
        os.close(fd)
        try:
            digest = _download_once(url, tmp, timeout)
            if sha256 is not None and digest != sha256:
                raise ChecksumError(
                    f"the file downloaded from {url} has sha256 {digest}, expected {sha256}; "
                    f"not saving it to {path}", reason=f"checksum mismatch: got {digest}")
            os.replace(tmp, path)  # atomic: the name only ever points at a complete file
            return path
        except ChecksumError:
            raise
        except (OSError, _IncompleteDownload, ValueError) as e:  # URLError is an OSError
            last_error = e
            if _is_permanent(e):
                break
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    reason = f"{type(last_error).__name__}: {last_error}"
    raise DownloadError(
        f"could not download {url} ({reason}).\n"
        f"If you are offline, copy the file to {path} by hand"
        + (f" (its sha256 must be {sha256})." if sha256 else "."), reason=reason)


def _is_permanent(error):
    """Errors that will not go away by asking again soon: HTTP 4xx (404 Not Found, 403, ...),
    a malformed URL (ValueError), and a host name that does not resolve (usually: offline)."""
    if isinstance(error, urllib.error.HTTPError):
        return 400 <= error.code < 500
    if isinstance(error, urllib.error.URLError) and isinstance(error.reason, socket.gaierror):
        return True
    return isinstance(error, ValueError)
