"""A local stand-in for the Hugging Face hub: the HTTP endpoints huggingface_hub really calls,
served from 127.0.0.1, so tests run the real client (no stubs) without the internet.

    mirror = HubMirror()                                   # a thread on a free port
    mirror.add_repo("org/tiny", {"config.json": b"...", "model.safetensors": b"..."})
    HF_ENDPOINT=mirror.url  ...                            # then call explorer.pretrained
    mirror.requests                                        # [(method, path)] received, in order

What huggingface_hub 2.4 asks, and what the hub answers (file_download.py, hf_api.py,
_snapshot_download.py, utils/_http.py):
  GET  /api/models/{repo}[/revision/{rev}]   model_info: "sha" (the commit) and "siblings";
                                             with ?blobs=True each sibling has "size",
                                             "blobId" (git sha1) and, for LFS files,
                                             "lfs": {"sha256", "size", "pointerSize"}
  GET  /api/models/{repo}/tree/{rev}         list_repo_tree: [{"type", "path", "size", "oid",
                                             "lfs": {"oid", "size", "pointerSize"}}]
  HEAD/GET /{repo}/resolve/{rev}/{file}      a regular file: 200, ETag = its git blob sha1;
                                             an LFS file: 302 to the CDN, X-Linked-Etag = its
                                             sha256, X-Linked-Size; both carry X-Repo-Commit
  HEAD/GET /cdn/{sha256}                     the CDN: another host name ("localhost"), as
                                             huggingface.co's is, so the client neither
                                             follows the HEAD's redirect nor sends the token
Errors carry the hub's X-Error-Code, which huggingface_hub turns into its exception types:
RepoNotFound (401, as the hub answers anonymous callers), RevisionNotFound (404),
EntryNotFound (404), GatedRepo (401 without a token, 403 with one that was not granted).
Revisions are quoted whole in URLs ("refs%2Fpr%2F1"), so a PR ref is one path segment.
"""
import hashlib
import http.server
import json
import threading
from dataclasses import dataclass, field
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".h5", ".msgpack", ".ckpt")


def git_blob_sha1(data: bytes) -> str:
    """git's object id of a file: sha1 of "blob <size>\\0" + the bytes."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


@dataclass
class RepoFile:
    path: str
    data: bytes

    @property
    def is_lfs(self):
        return self.path.endswith(LFS_SUFFIXES)

    @property
    def sha256(self):
        return hashlib.sha256(self.data).hexdigest()

    @property
    def pointer(self):
        """The LFS pointer git stores in place of the file."""
        return (f"version https://git-lfs.github.com/spec/v1\noid sha256:{self.sha256}\n"
                f"size {len(self.data)}\n").encode()

    @property
    def blob_id(self):
        return git_blob_sha1(self.pointer if self.is_lfs else self.data)

    def tree_entry(self):
        entry = {"type": "file", "oid": self.blob_id, "size": len(self.data), "path": self.path}
        if self.is_lfs:
            entry["lfs"] = {"oid": self.sha256, "size": len(self.data),
                            "pointerSize": len(self.pointer)}
        return entry

    def sibling(self, blobs):
        entry = {"rfilename": self.path}
        if blobs:
            entry.update(size=len(self.data), blobId=self.blob_id)
            if self.is_lfs:
                entry["lfs"] = {"sha256": self.sha256, "size": len(self.data),
                                "pointerSize": len(self.pointer)}
        return entry


@dataclass
class Repo:
    refs: dict = field(default_factory=dict)      # branch, tag or PR ref -> commit
    commits: dict = field(default_factory=dict)   # commit -> {path: RepoFile}
    token: str | None = None                      # set: gated, files need this token


class HubMirror:
    def __init__(self):
        self.repos = {}
        self.requests = []
        self.corrupted = set()   # sha256s whose bytes the CDN serves with one byte flipped
        self.lock = threading.Lock()
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.mirror = self
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.cdn = f"http://localhost:{self.port}/cdn"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()

    def add_repo(self, repo_id, files, revision="main", token=None):
        """Publish `files` ({path: bytes}) as a new commit of `repo_id` that `revision` names.
        token: make the repo gated, its files readable with that token only. Returns the commit."""
        repo = self.repos.setdefault(repo_id, Repo())
        repo.token = token if token is not None else repo.token
        contents = {path: RepoFile(path, bytes(data)) for path, data in files.items()}
        commit = hashlib.sha1(json.dumps([repo_id, revision, sorted(
            (p, f.blob_id) for p, f in contents.items())]).encode()).hexdigest()
        repo.commits[commit] = contents
        repo.refs[revision] = commit
        return commit

    def corrupt(self, repo_id, path, revision="main"):
        """From now on, serve `path` with one byte changed, under the true size and sha256."""
        repo = self.repos[repo_id]
        self.corrupted.add(repo.commits[repo.refs[revision]][path].sha256)

    def requests_for(self, fragment):
        return [r for r in self.requests if fragment in r[1]]


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self._serve(body=True)

    def do_HEAD(self):
        self._serve(body=False)

    def log_message(self, *args):
        pass

    # ------------------------------------------------------------------ routing
    def _serve(self, body):
        mirror = self.server.mirror
        with mirror.lock:
            mirror.requests.append((self.command, self.path))
        parts = urlsplit(self.path).path.strip("/").split("/")
        query = urlsplit(self.path).query
        if parts[0] == "cdn" and len(parts) == 2:
            return self._cdn(parts[1], body)
        if parts[:2] == ["api", "models"] and len(parts) >= 4:
            return self._api(f"{parts[2]}/{parts[3]}", parts[4:], query)
        if len(parts) >= 5 and parts[2] == "resolve":
            return self._resolve(f"{parts[0]}/{parts[1]}", unquote(parts[3]),
                                 unquote("/".join(parts[4:])), body)
        return self._error(404, None, f"no route for {self.path}")

    def _commit(self, repo_id, revision):
        """(repo, commit) or None after answering with the hub's error."""
        repo = self.server.mirror.repos.get(repo_id)
        if repo is None:
            self._error(401, "RepoNotFound", "Repository not found")
            return None
        commit = revision if revision in repo.commits else repo.refs.get(revision)
        if commit is None:
            self._error(404, "RevisionNotFound", f"Invalid rev id: {revision}")
            return None
        return repo, commit

    def _api(self, repo_id, rest, query):
        revision = unquote(rest[1]) if len(rest) >= 2 else "main"
        found = self._commit(repo_id, revision)
        if found is None:
            return
        repo, commit = found
        files = repo.commits[commit].values()
        blobs = parse_qs(query).get("blobs", ["false"])[0].lower() == "true"
        if not rest or rest[0] == "revision":
            info = {"_id": commit[:24], "id": repo_id, "modelId": repo_id, "sha": commit,
                    "private": False, "gated": "manual" if repo.token else False,
                    "disabled": False, "library_name": "transformers", "tags": [],
                    "lastModified": "2024-01-01T00:00:00.000Z",
                    "siblings": [f.sibling(blobs) for f in files]}
            return self._json(info)
        if rest[0] == "tree":
            return self._json([f.tree_entry() for f in files])
        return self._error(404, None, f"no route for {self.path}")

    def _resolve(self, repo_id, revision, path, body):
        found = self._commit(repo_id, revision)
        if found is None:
            return
        repo, commit = found
        if repo.token is not None:
            given = self.headers.get("authorization")
            message = f"Access to model {repo_id} is restricted"
            if given is None:
                return self._error(401, "GatedRepo", message + ". You must have access to it "
                                   "and be authenticated to access it. Please log in.")
            if given != f"Bearer {repo.token}":
                return self._error(403, "GatedRepo", message + " and you are not in the "
                                   "authorized list.")
        file = repo.commits[commit].get(path)
        if file is None:
            return self._error(404, "EntryNotFound", f"{path} does not exist on \"{revision}\"",
                               {"X-Repo-Commit": commit})
        headers = {"X-Repo-Commit": commit}
        if file.is_lfs:
            headers.update({"Location": f"{self.server.mirror.cdn}/{file.sha256}",
                            "X-Linked-Etag": f'"{file.sha256}"',
                            "X-Linked-Size": str(len(file.data)),
                            "ETag": f'"{file.blob_id}"', "Content-Length": "0"})
            return self._send(302, headers, b"", body)
        headers.update({"ETag": f'"{file.blob_id}"', "Content-Type": "application/octet-stream"})
        return self._send(200, headers, file.data, body)

    def _cdn(self, sha256, body):
        mirror = self.server.mirror
        for repo in mirror.repos.values():
            for files in repo.commits.values():
                for file in files.values():
                    if file.is_lfs and file.sha256 == sha256:
                        data = file.data
                        if sha256 in mirror.corrupted:
                            data = data[:-1] + bytes([data[-1] ^ 0x01])
                        return self._send(200, {"ETag": f'"{sha256}"'}, data, body)
        return self._error(404, None, "no such object")

    # ------------------------------------------------------------------ answers
    def _json(self, value):
        self._send(200, {"Content-Type": "application/json"}, json.dumps(value).encode(),
                   self.command != "HEAD")

    def _error(self, status, code, message, headers=None):
        headers = dict(headers or {}, **{"Content-Type": "application/json"})
        if code is not None:
            headers["X-Error-Code"] = code
        headers["X-Error-Message"] = message
        self._send(status, headers, json.dumps({"error": message}).encode(),
                   self.command != "HEAD")

    def _send(self, status, headers, data, body):
        self.send_response(status)
        headers = dict(headers)
        headers.setdefault("Content-Length", str(len(data)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(data)
