"""Pretrained GPT-2s from the Hugging Face hub: a name in, a GPT (tokenizer at hand) out.

    model = explorer.pretrained("gpt2")        # 124M; "gpt2-medium", "-large", "-xl", "distilgpt2"
    ids = model.tokenizer.encode("Hello")      # GPT-2's BPE (None for another vocabulary)
    explorer.pretrained("org/name", revision="v1.0")   # any GPT-2 on the hub, at a branch/tag/commit
    explorer.pretrained("some/folder")         # a local folder with config.json: load_hf
    $ explorer download gpt2                   # fetch, or bring up to date, while online

nanoGPT's GPT.from_pretrained, on our GPT: the hub's config.json gives the GPTConfig, and its
weights fill the model (names and Conv1D transposes: hf.py). Only safetensors are read: a
pytorch_model.bin is a pickle, and unpickling runs whatever code the file holds.

The files travel through huggingface_hub's own client and cache, so its settings hold as
they do for transformers: HF_ENDPOINT (a mirror), HF_HOME / HF_HUB_CACHE (where files go),
HF_HUB_OFFLINE=1 (no network) and HF_TOKEN (gated or private models). huggingface_hub reads
them when it is first imported; this module imports it on first use and copies none of them.

  1. The cache first. If config.json and the weights of the revision (default: main) are
     cached, they are used without any HTTP request: a notebook opens on a train. The hub is
     not asked whether main has moved on; `explorer download NAME` asks.
  2. Otherwise the hub. One model_info call gives the commit and every file's digest; then
     config.json is fetched and checked (a BERT is refused before gigabytes arrive), then
     model.safetensors, or model.safetensors.index.json and the shards it names.
  3. Integrity. huggingface_hub (2.4) checks a download's size, not its bytes, so we hash
     each file: an LFS file (the weights) against the sha256 the hub lists for it, which is
     also the name of its blob in the cache; a regular file (config.json) against its git
     blob sha1. A file that fails is deleted, blob and snapshot link, so no later call,
     offline or not, ours or transformers', can pick it up. Cached files are hashed again
     on every load, against their blob names: about 1 s per GB here.
"""
import hashlib
import os
import re
import warnings
from contextlib import contextmanager

from ..model.gpt import GPT
from .checkpoint import NoChecksumWarning
from .hf import CONFIG_NAME, INDEX_NAME, WEIGHTS_NAME, config_from_hf, load_hf, read_config, shards_of

#: short names -> hub repositories (the hub's own short names redirect to these)
ALIASES = {"gpt2": "openai-community/gpt2", "gpt2-medium": "openai-community/gpt2-medium",
           "gpt2-large": "openai-community/gpt2-large", "gpt2-xl": "openai-community/gpt2-xl",
           "distilgpt2": "distilbert/distilgpt2"}
GPT2_VOCAB_SIZE = 50257          # the vocabulary GPT2Tokenizer encodes
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt")
_HASH_BLOCK = 16 * 2**20


def pretrained(name: str, revision: str | None = None) -> GPT:
    """GPT-2 weights from the hub (or a local folder) in an explorer GPT.

    name: "gpt2", "gpt2-medium", "gpt2-large", "gpt2-xl", "distilgpt2", a hub id "org/name"
    of a GPT-2 (model_type "gpt2", safetensors weights), or a folder holding config.json and
    model.safetensors (a folder wins over a hub id of the same spelling, as in transformers).
    revision: a branch, tag, commit or PR ref ("refs/pr/1") of a hub model; default main.

    The model comes with its tokenizer at hand: model.tokenizer is GPT-2's BPE when the
    vocabulary is GPT-2's 50,257 tokens (every model the short names give), else None.
    (A fine-tune that retrained its BPE at exactly that size would need its own tokenizer.)
    Raises FileNotFoundError (no such model, revision or folder; not cached while offline),
    PermissionError (gated or private: HF_TOKEN), ConnectionError, ValueError (not a GPT-2,
    or weights only as pickles), OSError (a download that failed its checksum)."""
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"a model name is a str such as 'gpt2' (or a folder), got {type(name).__name__}")
    if isinstance(name, os.PathLike) or os.path.isdir(name):
        if revision is not None:
            raise ValueError(f"revision={revision!r} picks a version of a hub model, but "
                             f"{name!r} is a local folder")
        model = load_hf(name)
    else:
        repo_id = repo_id_of(name)
        found = _cached(name, repo_id, revision)
        if found is None:
            if _offline():
                raise _not_cached_error(name, revision)
            found = _fetch(name, repo_id, revision)
        paths, verified = found
        model = load_hf(os.path.dirname(paths[0]), verified=verified)
    model.tokenizer = tokenizer_for(model.config)
    return model


def download(name: str, revision: str | None = None) -> str:
    """Fetch `name`'s config.json and safetensors into huggingface_hub's cache, or bring them
    up to date with the hub, verify them, and return the folder that holds them. Offline
    (HF_HUB_OFFLINE=1), the cached copy's folder. Also fetches GPT-2's tokenizer files when
    the model uses them, so that pretrained(name) then works offline."""
    repo_id = repo_id_of(name)
    found = _cached(name, repo_id, revision) if _offline() else _fetch(name, repo_id, revision)
    if found is None:
        raise _not_cached_error(name, revision)
    folder = os.path.dirname(found[0][0])
    tokenizer_for(config_from_hf(read_config(os.path.join(folder, CONFIG_NAME))))
    return folder


def repo_id_of(name: str) -> str:
    """The hub repository a name means: an alias's, or "org/name" as given."""
    if not isinstance(name, str):
        raise TypeError(f"a model name is a str such as 'gpt2', got {type(name).__name__}")
    repo_id = ALIASES.get(name, name)
    if repo_id.count("/") != 1 or repo_id.startswith("/") or repo_id.endswith("/"):
        raise ValueError(f"{name!r} is not a folder, nor a model name: expected one of "
                         f"{', '.join(ALIASES)}, a hub id 'org/name' (e.g. "
                         f"'openai-community/gpt2'), or a folder holding config.json")
    return repo_id


def tokenizer_for(config):
    """GPT-2's tokenizer for a model with GPT-2's vocabulary size; None otherwise."""
    if config.vocab_size != GPT2_VOCAB_SIZE:
        return None
    from ..tokenizers import GPT2Tokenizer
    return GPT2Tokenizer(download=not _offline())


# --------------------------------------------------------------------------- the cache
def _cached(name, repo_id, revision):
    """([config, (index,) weights...], verified?) from the cache, without any HTTP request;
    None when something is not cached (or was corrupt, and is now deleted)."""
    hub = _hub()

    def cached(filename):
        path = hub.try_to_load_from_cache(repo_id, filename, revision=revision)
        return path if isinstance(path, str) and os.path.isfile(path) else None

    config = cached(CONFIG_NAME)
    if config is None:
        return None
    _check_config(name, repo_id, config)   # a cached BERT config is refused offline too
    weights, index = cached(WEIGHTS_NAME), cached(INDEX_NAME)
    if weights is not None:
        paths = [config, weights]
    elif index is not None:
        paths = [config, index, *(cached(shard) for shard in shards_of(index))]
    else:
        return None
    if None in paths:   # a shard is missing
        return None
    verified = True
    for path in paths:
        expected = _blob_digest(path)
        if expected is None:   # a copy, not a link to a blob named by its digest
            verified = False
        elif _file_digest(path, expected[0]) != expected[1]:
            _evict(path)
            warnings.warn(f"the cached {os.path.basename(path)} of {repo_id} was corrupt (it "
                          f"does not hash to its {expected[0]} {expected[1]}) and was deleted; "
                          f"it must be downloaded again", stacklevel=3)
            return None
    return paths, verified


def _blob_digest(path):
    """(algorithm, digest) that the cache's blob name says the file has: huggingface_hub
    names a blob by its ETag, the sha256 of an LFS file or the git sha1 of a regular one."""
    if not os.path.islink(path):
        return None
    blob = os.path.basename(os.path.realpath(path))
    if re.fullmatch(r"[0-9a-f]{64}", blob):
        return "sha256", blob
    if re.fullmatch(r"[0-9a-f]{40}", blob):
        return "git-sha1", blob
    return None


def _file_digest(path, algorithm):
    """The sha256 of a file, or its git blob sha1 (sha1 of "blob <size>\\0" + the bytes)."""
    if algorithm == "sha256":
        digest = hashlib.sha256()
    else:
        digest = hashlib.sha1(b"blob %d\x00" % os.path.getsize(path))
    block = memoryview(bytearray(_HASH_BLOCK))
    with open(path, "rb", buffering=0) as f:
        while count := f.readinto(block):
            digest.update(block[:count])
    return digest.hexdigest()


def _evict(path):
    """Delete a cached file: the blob and the snapshot entry that links to it."""
    for doomed in {os.path.realpath(path), path}:
        try:
            os.remove(doomed)
        except FileNotFoundError:
            pass


# --------------------------------------------------------------------------- the hub
def _fetch(name, repo_id, revision):
    """Download what pretrained needs from the hub, each file checked: ([paths], verified?)."""
    hub = _hub()
    with _hub_errors(name, repo_id, revision):
        info = hub.HfApi().model_info(repo_id, revision=revision, files_metadata=True)
        listing = {sibling.rfilename: sibling for sibling in info.siblings or []}
        _check_files(name, repo_id, revision, listing)
        # by the revision's name first, so that the cache records where it points (refs/)
        fetched = [_fetch_file(hub, repo_id, CONFIG_NAME, revision, info.sha, listing)]
        _check_config(name, repo_id, fetched[0][0])
        if WEIGHTS_NAME in listing:
            weights = [WEIGHTS_NAME]
        else:
            fetched.append(_fetch_file(hub, repo_id, INDEX_NAME, info.sha, info.sha, listing))
            weights = shards_of(fetched[-1][0])
            absent = [shard for shard in weights if shard not in listing]
            if absent:
                raise FileNotFoundError(f"{repo_id}'s {INDEX_NAME} names shards the repository "
                                        f"does not have: {absent}")
        fetched += [_fetch_file(hub, repo_id, shard, info.sha, info.sha, listing)
                    for shard in weights]
    return [path for path, _ in fetched], all(verified for _, verified in fetched)


def _fetch_file(hub, repo_id, filename, revision, commit, listing):
    """(path, verified?) of one file, downloaded into the cache (unless already there) and
    hashed against the digest the hub's listing gives it."""
    path = hub.hf_hub_download(repo_id, filename, revision=revision)
    arrived = os.path.basename(os.path.dirname(path))
    if arrived != commit:
        raise OSError(f"{repo_id} changed on the hub while it was being downloaded ({filename} "
                      f"came from commit {arrived}, not {commit}): run the same call again")
    expected = _listed_digest(listing[filename]) or _blob_digest(path)
    if expected is None:
        warnings.warn(f"the hub lists no digest for {filename} of {repo_id}, so it could not be "
                      f"verified", NoChecksumWarning, stacklevel=4)
        return path, False
    algorithm, digest = expected
    actual = _file_digest(path, algorithm)
    if actual != digest:
        _evict(path)
        raise OSError(f"{filename} of {repo_id} (commit {commit[:12]}) is corrupt: its "
                      f"{algorithm} is {actual}, but the hub lists {digest}. It was deleted from "
                      f"the cache; run the same call again to download it anew (if it fails "
                      f"again, the server at {_endpoint()} serves bad bytes: check HF_ENDPOINT).")
    named = _blob_digest(path)
    if named is not None and named != expected:
        _evict(path)
        raise OSError(f"the hub's ETag for {filename} of {repo_id} ({named[1]}) is not the "
                      f"{algorithm} its file listing gives ({digest}): the server at "
                      f"{_endpoint()} is inconsistent (check HF_ENDPOINT)")
    return path, True


def _listed_digest(sibling):
    """(algorithm, digest) the hub's model_info(files_metadata=True) lists for a file."""
    lfs = getattr(sibling, "lfs", None)
    if lfs is not None:
        sha256 = lfs.get("sha256") if isinstance(lfs, dict) else getattr(lfs, "sha256", None)
        return ("sha256", sha256) if sha256 else None
    blob_id = getattr(sibling, "blob_id", None)
    return ("git-sha1", blob_id) if blob_id else None


def _check_files(name, repo_id, revision, listing):
    """Refuse, before any download, a repository without config.json or safetensors."""
    where = _where(repo_id, revision)
    if CONFIG_NAME not in listing:
        raise FileNotFoundError(f"{where} has no {CONFIG_NAME}, so it is not a transformers "
                                f"model folder (its files: {_preview(sorted(listing))})")
    if WEIGHTS_NAME in listing or INDEX_NAME in listing:
        return
    pickles = [file for file in sorted(listing) if file.endswith(PICKLE_SUFFIXES)]
    if not pickles:
        raise FileNotFoundError(f"{where} has no {WEIGHTS_NAME} (nor {INDEX_NAME}); its files: "
                                f"{_preview(sorted(listing))}")
    raise ValueError(
        f"{where} has its weights only as {pickles}, PyTorch pickle files, and explorer never "
        f"unpickles: loading a pickle can run any code the file holds. To get safetensors:\n"
        f"  - use a revision that has {WEIGHTS_NAME}: the hub's conversion bot opens pull "
        f"requests that add one (see {_endpoint()}/{repo_id}/discussions); pass its ref, e.g. "
        f"explorer.pretrained({name!r}, revision=\"refs/pr/1\");\n"
        f"  - or, if you trust the file, convert it with transformers: "
        f"GPT2LMHeadModel.from_pretrained({repo_id!r}).save_pretrained(\"my-folder\", "
        f"safe_serialization=True), then explorer.pretrained(\"my-folder\").")


def _check_config(name, repo_id, config_path):
    """Refuse a model our GPT does not compute (another architecture or a GPT-2 variant)."""
    hf = read_config(config_path)
    try:
        config_from_hf(hf, CONFIG_NAME)
    except ValueError as err:
        kind = "/".join([hf.get("model_type") or "no model_type", *(hf.get("architectures") or [])])
        raise ValueError(f"{repo_id} ({kind}) is not a GPT-2 that explorer's GPT computes: {err}. "
                         f"explorer.pretrained loads GPT-2s such as {', '.join(ALIASES)}, or "
                         f"'org/name' repositories whose config.json has model_type \"gpt2\"") from err


@contextmanager
def _hub_errors(name, repo_id, revision):
    """huggingface_hub's exceptions, said for people: what was wrong and what to do."""
    hub = _hub()
    errors, where, endpoint = hub.utils, _where(repo_id, revision), _endpoint()
    try:
        yield
    except errors.GatedRepoError as err:
        token = ("the token you gave (HF_TOKEN or your saved login) has not been granted access"
                 if hub.get_token() else "no token was sent")
        raise PermissionError(
            f"{repo_id} is gated and {token}. Accept its conditions at {endpoint}/{repo_id} "
            f"with your account, create a read token at {endpoint}/settings/tokens, and set "
            f"HF_TOKEN=hf_... (or run `hf auth login`)") from err
    except errors.RepositoryNotFoundError as err:
        raise FileNotFoundError(
            f"no model {repo_id!r} on {endpoint} (asked for {name!r}). Check the spelling "
            f"('org/name', e.g. 'openai-community/gpt2'); if it is private, set HF_TOKEN to a "
            f"token that can read it") from err
    except errors.RevisionNotFoundError as err:
        raise FileNotFoundError(
            f"{repo_id} has no revision {revision!r}: pass a branch, tag, commit or PR ref it "
            f"has (see {endpoint}/{repo_id}/tree/main), or none for main") from err
    except errors.HfHubHTTPError as err:
        status = getattr(getattr(err, "response", None), "status_code", None)
        if status == 401:
            raise PermissionError(
                f"{endpoint} refused the token for {where} (401 Unauthorized): the token in "
                f"HF_TOKEN (or your saved login) is wrong or expired. Make a new one at "
                f"{endpoint}/settings/tokens, or unset HF_TOKEN for public models") from err
        raise OSError(f"{endpoint} answered {status} for {where}: {err}") from err
    except errors.LocalEntryNotFoundError as err:   # no connection, and not cached
        raise ConnectionError(_unreachable(name, endpoint, err)) from err
    except errors.HFValidationError as err:
        raise ValueError(f"{name!r} is not a valid hub id ({err}); expected 'org/name' or one "
                         f"of {', '.join(ALIASES)}") from err
    except Exception as err:
        if not _is_connection_error(err):
            raise
        raise ConnectionError(_unreachable(name, endpoint, err)) from err


def _is_connection_error(err):
    # requests' ConnectionError (huggingface_hub < 1), httpx's ConnectError, TimeoutException
    names = {cls.__name__ for cls in type(err).__mro__}
    return bool(names & {"ConnectionError", "ConnectError", "TimeoutException", "NetworkError",
                         "Timeout"})


def _unreachable(name, endpoint, err):
    return (f"could not reach {endpoint} to fetch {name!r} ({type(err).__name__}: {err}). Check "
            f"the connection (or HF_ENDPOINT); models downloaded before load without it")


def _not_cached_error(name, revision):
    constants = _hub().constants
    command = f"explorer download {name}" + (f" --revision {revision}" if revision else "")
    return FileNotFoundError(
        f"{name!r}{f' at revision {revision!r}' if revision else ''} is not in the Hugging Face "
        f"cache ({constants.HF_HUB_CACHE}), and HF_HUB_OFFLINE=1 forbids downloading it. "
        f"While online, run:\n    {command}\n(or unset HF_HUB_OFFLINE to let this call download it)")


# --------------------------------------------------------------------------- small things
def _hub():
    """huggingface_hub, imported on first use (it reads its environment variables then)."""
    try:
        import huggingface_hub
        import huggingface_hub.constants  # submodules are attributes only once imported
        import huggingface_hub.utils  # noqa: F401
    except ImportError as err:
        raise ImportError("explorer.pretrained downloads through huggingface_hub: "
                          "pip install 'huggingface_hub>=0.24'") from err
    return huggingface_hub


def _offline():
    return bool(_hub().constants.HF_HUB_OFFLINE)


def _endpoint():
    return _hub().constants.ENDPOINT


def _where(repo_id, revision):
    return repo_id if revision is None else f"{repo_id} at revision {revision!r}"


def _preview(names, limit=8):
    return ", ".join(names[:limit]) + (f", ... ({len(names)} files)" if len(names) > limit else "")
