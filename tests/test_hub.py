"""explorer.pretrained and `explorer download` against a local hub (tests/hub_mirror.py), with
the real huggingface_hub client: the download, the cache (no request the second time),
offline mode, integrity (corrupt bytes are refused and leave nothing behind), every refusal
(pickles only, another architecture, gated, no such repo or revision), and the logits.

Most tests run in this process, pointing huggingface_hub at the mirror by patching its
constants (as its own tests do: it reads HF_ENDPOINT, HF_HOME, HF_HUB_OFFLINE once, at
import). The tests marked "environment" run `python -m explorer` in a subprocess with the
real variables set, which is what a user does."""
import hashlib
import io
import json
import os
import subprocess
import sys
import tempfile
import warnings

import numpy as np
import pytest
from hub_mirror import HubMirror

from explorer.io import hub as explorer_hub
from explorer.io.checkpoint import NoChecksumWarning
from explorer.io.hf import load_hf

huggingface_hub = pytest.importorskip("huggingface_hub")
torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

TINY = dict(n_layer=2, n_head=2, n_embd=16, vocab_size=37, n_positions=8)
REPO = "org/tiny-gpt2"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# GPT-2's tokenizer files, offline: the tiktoken cache beside the checkout (../shared/data).
TIKTOKEN_CACHE = os.path.join(os.path.dirname(ROOT), "shared", "data", "tiktoken_cache")
_made = {}


def transformers_files(kind="gpt2", seed=0, max_shard_size=None, **config):
    """{file name: bytes} of a small model as transformers' save_pretrained writes it
    (config.json, generation_config.json, model.safetensors or shards and their index)."""
    key = (kind, seed, max_shard_size, tuple(sorted(config.items())))
    if key not in _made:
        torch.manual_seed(seed)
        if kind == "gpt2":
            model = transformers.GPT2LMHeadModel(transformers.GPT2Config(
                **{**TINY, **config}, bos_token_id=None, eos_token_id=None))
        elif kind == "gpt_neox":
            model = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(
                hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                vocab_size=37, max_position_embeddings=8))
        else:
            model = transformers.BertModel(transformers.BertConfig(
                hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                vocab_size=37, max_position_embeddings=8))
        with tempfile.TemporaryDirectory() as folder:
            model.save_pretrained(folder, safe_serialization=True,
                                  **({"max_shard_size": max_shard_size} if max_shard_size else {}))
            _made[key] = {name: open(os.path.join(folder, name), "rb").read()
                          for name in os.listdir(folder)}
    return dict(_made[key])


def pickle_only_files():
    """config.json and a real pytorch_model.bin (a pickle; nothing here ever loads it)."""
    files = transformers_files()
    buffer = io.BytesIO()
    torch.save({"wte.weight": torch.zeros(37, 16)}, buffer)
    return {"config.json": files["config.json"], "pytorch_model.bin": buffer.getvalue()}


def hf_logits(folder, idx):
    model = transformers.GPT2LMHeadModel.from_pretrained(folder).eval()
    with torch.no_grad():
        return model(torch.from_numpy(idx)).logits.numpy()


def rel_err(ours, theirs):
    return float(np.max(np.abs(ours - theirs)) / np.max(np.abs(theirs)))


def resolves(mirror):
    """The files the client downloaded (GET on /resolve or the CDN), as repo paths."""
    return [path for method, path in mirror.requests if method == "GET" and "/resolve/" in path]


def cdn_gets(mirror):
    return [path for method, path in mirror.requests if method == "GET" and path.startswith("/cdn/")]


@pytest.fixture
def hub(tmp_path, monkeypatch):
    """A mirror, and huggingface_hub pointed at it with its cache in tmp_path/hf."""
    mirror = HubMirror()
    constants = huggingface_hub.constants
    home = tmp_path / "hf"
    for name, value in {
        "ENDPOINT": mirror.url,
        "HUGGINGFACE_CO_URL_TEMPLATE": mirror.url + "/{repo_id}/resolve/{revision}/{filename}",
        "HF_HOME": str(home), "HF_HUB_CACHE": str(home / "hub"),
        "HF_TOKEN_PATH": str(home / "token"), "HF_STORED_TOKENS_PATH": str(home / "stored_tokens"),
        "AGENT_HARNESSES_PATH": str(home / ".agent_harnesses.json"),
        "HF_HUB_OFFLINE": False,
    }.items():
        monkeypatch.setattr(constants, name, value)
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", TIKTOKEN_CACHE)
    mirror.cache = home / "hub"
    yield mirror
    mirror.close()


def offline(monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


def snapshot_files(mirror, repo_id=REPO):
    """{file: (is a link?, blob name)} of every cached snapshot of repo_id."""
    folder = mirror.cache / f"models--{repo_id.replace('/', '--')}" / "snapshots"
    if not folder.is_dir():
        return {}
    return {f"{commit.name}/{entry.name}": os.path.basename(os.path.realpath(entry))
            for commit in folder.iterdir() for entry in commit.iterdir()}


# --------------------------------------------------------------------------- downloading
def test_pretrained_downloads_config_and_safetensors_only_and_matches_transformers(hub):
    commit = hub.add_repo(REPO, transformers_files())
    model = explorer_hub.pretrained(REPO)
    assert model.config.n_layer == 2 and model.config.vocab_size == 37
    assert model.tokenizer is None   # not GPT-2's vocabulary
    # config.json from /resolve, the weights from the CDN; not generation_config.json
    assert resolves(hub) == [f"/{REPO}/resolve/main/config.json"]
    assert len(cdn_gets(hub)) == 1
    assert sorted(snapshot_files(hub)) == [f"{commit}/config.json", f"{commit}/model.safetensors"]

    folder = hub.cache / "models--org--tiny-gpt2" / "snapshots" / commit
    idx = np.random.default_rng(0).integers(0, 37, size=(3, 8))
    logits, _ = model.forward(idx)
    err = rel_err(logits, hf_logits(folder, idx))
    print(f"\nlogits vs transformers on the same weights: max rel err {err:.1e}")
    assert err <= 1e-5


def test_a_second_call_is_served_from_the_cache_without_any_request(hub):
    hub.add_repo(REPO, transformers_files())
    first = explorer_hub.pretrained(REPO)
    hub.requests.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error", NoChecksumWarning)   # verified against the blob names
        second = explorer_hub.pretrained(REPO)
    assert hub.requests == []
    np.testing.assert_array_equal(second.flat_params, first.flat_params)


def test_download_asks_the_hub_again_and_finds_a_new_commit(hub):
    old = hub.add_repo(REPO, transformers_files(seed=0))
    assert os.path.basename(explorer_hub.download(REPO)) == old
    new = hub.add_repo(REPO, transformers_files(seed=1))   # main moves on
    stale = explorer_hub.pretrained(REPO)                   # the cache, not asked
    hub.requests.clear()
    folder = explorer_hub.download(REPO)
    assert os.path.basename(folder) == new and hub.requests
    fresh = explorer_hub.pretrained(REPO)
    assert not np.array_equal(fresh.flat_params, stale.flat_params)
    with pytest.warns(NoChecksumWarning):   # a bare folder: load_hf cannot know its digests
        np.testing.assert_array_equal(fresh.flat_params, load_hf(folder).flat_params)


def test_sharded_safetensors_load_from_the_hub_and_then_from_the_cache(hub, monkeypatch):
    files = transformers_files(max_shard_size="20KB")
    assert sorted(files) == ["config.json", "generation_config.json",
                             "model-00001-of-00002.safetensors",
                             "model-00002-of-00002.safetensors", "model.safetensors.index.json"]
    hub.add_repo(REPO, files)
    model = explorer_hub.pretrained(REPO)
    assert len(cdn_gets(hub)) == 2
    whole = transformers_files()   # the same seed, unsharded
    hub.add_repo("org/whole", whole)
    np.testing.assert_array_equal(model.flat_params, explorer_hub.pretrained("org/whole").flat_params)
    offline(monkeypatch)
    hub.requests.clear()
    np.testing.assert_array_equal(explorer_hub.pretrained(REPO).flat_params, model.flat_params)
    assert hub.requests == []


def test_a_revision_picks_a_branch_tag_commit_or_pr(hub):
    main = hub.add_repo(REPO, transformers_files(seed=0))
    tag = hub.add_repo(REPO, transformers_files(seed=1), revision="v1.0")
    by_main = explorer_hub.pretrained(REPO)
    by_tag = explorer_hub.pretrained(REPO, revision="v1.0")
    assert not np.array_equal(by_main.flat_params, by_tag.flat_params)
    np.testing.assert_array_equal(explorer_hub.pretrained(REPO, revision=tag).flat_params,
                                  by_tag.flat_params)
    np.testing.assert_array_equal(explorer_hub.pretrained(REPO, revision=main).flat_params,
                                  by_main.flat_params)


# --------------------------------------------------------------------------- offline
def test_offline_uses_the_cache_and_otherwise_says_what_to_run(hub, monkeypatch):
    hub.add_repo(REPO, transformers_files())
    online = explorer_hub.pretrained(REPO)
    offline(monkeypatch)
    hub.requests.clear()
    np.testing.assert_array_equal(explorer_hub.pretrained(REPO).flat_params, online.flat_params)
    with pytest.raises(FileNotFoundError) as missing:
        explorer_hub.pretrained("org/other", revision="v2")
    message = str(missing.value)
    assert "HF_HUB_OFFLINE=1 forbids downloading it" in message
    assert "explorer download org/other --revision v2" in message
    assert str(hub.cache) in message
    assert hub.requests == []


# --------------------------------------------------------------------------- integrity
def test_huggingface_hub_alone_keeps_corrupted_bytes(hub):
    """Why explorer hashes: the client checks a download's size, not its sha256."""
    hub.add_repo(REPO, transformers_files())
    hub.corrupt(REPO, "model.safetensors")
    path = huggingface_hub.hf_hub_download(REPO, "model.safetensors")
    blob = os.path.basename(os.path.realpath(path))
    assert hashlib.sha256(open(path, "rb").read()).hexdigest() != blob


def test_corrupted_download_is_refused_and_nothing_is_left_to_load(hub, monkeypatch):
    files = transformers_files()
    commit = hub.add_repo(REPO, files)
    hub.corrupt(REPO, "model.safetensors")
    sha256 = hashlib.sha256(files["model.safetensors"]).hexdigest()
    with pytest.raises(OSError, match=f"model.safetensors of {REPO} .* is corrupt: its sha256 "
                                      f"is [0-9a-f]{{64}}, but the hub lists {sha256}. It was deleted"):
        explorer_hub.pretrained(REPO)
    blobs = hub.cache / "models--org--tiny-gpt2" / "blobs"
    assert not (blobs / sha256).exists()
    assert f"{commit}/model.safetensors" not in snapshot_files(hub)
    # nothing a later offline call accepts: neither ours nor huggingface_hub's own
    offline(monkeypatch)
    with pytest.raises(FileNotFoundError, match="explorer download org/tiny-gpt2"):
        explorer_hub.pretrained(REPO)
    with pytest.raises(huggingface_hub.utils.LocalEntryNotFoundError):
        huggingface_hub.hf_hub_download(REPO, "model.safetensors", local_files_only=True)
    # once the server sends the right bytes, the same call works
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    hub.corrupted.clear()
    assert explorer_hub.pretrained(REPO).config.n_embd == 16


def test_a_cached_file_that_rots_is_deleted_and_fetched_again(hub, monkeypatch):
    hub.add_repo(REPO, transformers_files())
    good = explorer_hub.pretrained(REPO)
    path = huggingface_hub.try_to_load_from_cache(REPO, "model.safetensors")
    blob = os.path.realpath(path)
    data = bytearray(open(blob, "rb").read())
    data[-1] ^= 0x01   # one flipped bit in the last weight: still a finite float
    os.chmod(blob, 0o644)
    open(blob, "wb").write(bytes(data))
    hub.requests.clear()
    with pytest.warns(UserWarning, match="cached model.safetensors of org/tiny-gpt2 was corrupt"):
        again = explorer_hub.pretrained(REPO)
    assert len(cdn_gets(hub)) == 1
    np.testing.assert_array_equal(again.flat_params, good.flat_params)
    # offline, a rotten file is deleted too, and the error says how to get it back
    open(blob, "wb").write(bytes(data))
    offline(monkeypatch)
    with pytest.warns(UserWarning, match="was corrupt"), \
            pytest.raises(FileNotFoundError, match="explorer download org/tiny-gpt2"):
        explorer_hub.pretrained(REPO)
    assert not os.path.exists(blob)


# --------------------------------------------------------------------------- refusals
def test_a_repo_with_only_a_pickle_is_refused_before_any_download(hub):
    hub.add_repo(REPO, pickle_only_files())
    with pytest.raises(ValueError) as refused:
        explorer_hub.pretrained(REPO)
    message = str(refused.value)
    assert "['pytorch_model.bin'], PyTorch pickle files, and explorer never unpickles" in message
    assert f"explorer.pretrained('{REPO}', revision=\"refs/pr/1\")" in message
    assert "save_pretrained(\"my-folder\", safe_serialization=True)" in message
    assert resolves(hub) == [] and cdn_gets(hub) == []
    # the hub's conversion bot's pull request has safetensors: that revision loads
    hub.add_repo(REPO, transformers_files(), revision="refs/pr/1")
    model = explorer_hub.pretrained(REPO, revision="refs/pr/1")
    assert model.config.n_layer == 2
    assert resolves(hub) == [f"/{REPO}/resolve/refs%2Fpr%2F1/config.json"]


@pytest.mark.parametrize("kind", ["gpt_neox", "bert"])
def test_another_architecture_is_refused_after_its_config_only(hub, kind):
    hub.add_repo("org/not-gpt2", transformers_files(kind))
    architecture = {"gpt_neox": "gpt_neox/GPTNeoXForCausalLM", "bert": "bert/BertModel"}[kind]
    with pytest.raises(ValueError, match=f"org/not-gpt2 \\({architecture}\\) is not a GPT-2 that "
                                         f"explorer's GPT computes: config.json: model_type is "
                                         f"'{kind}', expected 'gpt2'"):
        explorer_hub.pretrained("org/not-gpt2")
    assert resolves(hub) == ["/org/not-gpt2/resolve/main/config.json"] and cdn_gets(hub) == []


def test_a_gpt2_variant_our_model_does_not_compute_is_refused(hub):
    hub.add_repo(REPO, transformers_files(activation_function="relu"))
    with pytest.raises(ValueError, match="activation_function is 'relu'"):
        explorer_hub.pretrained(REPO)
    assert cdn_gets(hub) == []


def test_a_gated_repo_needs_hf_token(hub, monkeypatch):
    hub.add_repo("org/gated", transformers_files(), token="hf_granted")
    with pytest.raises(PermissionError, match="org/gated is gated and no token was sent. Accept "
                                              "its conditions at .* set HF_TOKEN=hf_"):
        explorer_hub.pretrained("org/gated")
    monkeypatch.setenv("HF_TOKEN", "hf_someone_else")
    with pytest.raises(PermissionError, match="has not been granted access"):
        explorer_hub.pretrained("org/gated")
    monkeypatch.setenv("HF_TOKEN", "hf_granted")
    assert explorer_hub.pretrained("org/gated").config.n_layer == 2


def test_a_missing_repo_or_revision_is_named(hub):
    hub.add_repo(REPO, transformers_files())
    with pytest.raises(FileNotFoundError, match=f"no model 'org/nope' on {hub.url} .*HF_TOKEN"):
        explorer_hub.pretrained("org/nope")
    with pytest.raises(FileNotFoundError, match=f"{REPO} has no revision 'v9': pass a branch"):
        explorer_hub.pretrained(REPO, revision="v9")


def test_an_unreachable_hub_is_a_connection_error(hub, monkeypatch):
    monkeypatch.setattr(huggingface_hub.constants, "ENDPOINT", "http://127.0.0.1:9")
    with pytest.raises(ConnectionError, match="could not reach http://127.0.0.1:9 to fetch "
                                              "'org/tiny-gpt2'.*HF_ENDPOINT"):
        explorer_hub.pretrained(REPO)


# --------------------------------------------------------------------------- names, tokenizer
def test_names_aliases_and_folders(hub, tmp_path):
    assert explorer_hub.repo_id_of("gpt2") == "openai-community/gpt2"
    assert explorer_hub.repo_id_of("gpt2-xl") == "openai-community/gpt2-xl"
    assert explorer_hub.repo_id_of("distilgpt2") == "distilbert/distilgpt2"
    assert explorer_hub.repo_id_of("org/name") == "org/name"
    for bad in ("gpt3", "a/b/c", "/abs"):
        with pytest.raises(ValueError, match="is not a folder, nor a model name: expected one of "
                                             "gpt2, gpt2-medium"):
            explorer_hub.pretrained(bad)
    folder = tmp_path / "local"
    folder.mkdir()
    for name, data in transformers_files().items():
        (folder / name).write_bytes(data)
    with pytest.warns(NoChecksumWarning):
        model = explorer_hub.pretrained(str(folder))
    assert model.config.n_embd == 16 and hub.requests == []
    with pytest.raises(ValueError, match="is a local folder"):
        explorer_hub.pretrained(str(folder), revision="main")


def test_gpt2_vocabulary_comes_with_gpt2s_tokenizer(hub):
    hub.add_repo("openai-community/gpt2", transformers_files(n_embd=8, n_head=2, n_layer=1,
                                                             vocab_size=50257))
    model = explorer_hub.pretrained("gpt2")
    assert type(model.tokenizer).__name__ == "GPT2Tokenizer"
    assert model.tokenizer.encode("hello world") == [31373, 995]
    import explorer
    assert explorer.pretrained is explorer_hub.pretrained and "pretrained" in explorer.__all__


# --------------------------------------------------------------------------- the command line
def test_cli_download_prints_the_folder_and_sample_model_samples(hub, capsys):
    from explorer.cli import main
    commit = hub.add_repo(REPO, transformers_files())
    assert main(["download", REPO]) == 0
    folder = capsys.readouterr().out.strip()
    assert os.path.basename(folder) == commit and os.path.isfile(os.path.join(folder, "config.json"))
    assert main(["sample", "--model", REPO, "--tokens", "4", "--seed", "0"]) == 0
    ids = capsys.readouterr().out.split()   # no tokenizer for a 37-token vocabulary: ids
    assert len(ids) == 5 and all(0 <= int(i) < 37 for i in ids)
    assert main(["sample", "--model", REPO, "--prompt", "Hi"]) == 2
    assert "has a 37-token vocabulary, not GPT-2's" in capsys.readouterr().err
    assert main(["sample", "--model", "org/nope"]) == 2
    assert "explorer sample: error: no model 'org/nope'" in capsys.readouterr().err
    for args in (["sample"], ["sample", "run", "--model", REPO], ["sample", "run", "--revision", "v1"]):
        with pytest.raises(SystemExit) as stop:
            main(args)
        assert stop.value.code == 2
    assert "give either a checkpoint" in capsys.readouterr().err


# --------------------------------------------------------------------------- environment
def run_explorer(args, env):
    return subprocess.run([sys.executable, "-m", "explorer", *args], env=env, capture_output=True,
                          text=True, timeout=300, cwd=ROOT)


@pytest.fixture
def hub_env(tmp_path):
    """A mirror, and the environment a user would set for it (HF_ENDPOINT, HF_HOME)."""
    mirror = HubMirror()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    env.update(HF_ENDPOINT=mirror.url, HF_HOME=str(tmp_path / "hf"), TIKTOKEN_CACHE_DIR=TIKTOKEN_CACHE,
               PYTHONPATH=os.pathsep.join([ROOT, env.get("PYTHONPATH", "")]))
    mirror.env = env
    yield mirror
    mirror.close()


def test_environment_cli_download_then_offline_sample(hub_env):
    """HF_ENDPOINT and HF_HOME send `explorer download` to the mirror and the cache; with
    HF_HUB_OFFLINE=1, `explorer sample --model` then runs without a single request."""
    commit = hub_env.add_repo("openai-community/gpt2", transformers_files(
        n_embd=8, n_head=2, n_layer=1, vocab_size=50257))
    done = run_explorer(["download", "gpt2"], hub_env.env)
    assert done.returncode == 0, done.stderr
    snapshot = os.path.join(hub_env.env["HF_HOME"], "hub", "models--openai-community--gpt2",
                            "snapshots", commit)
    assert done.stdout.strip().splitlines()[-1] == snapshot
    assert sorted(os.listdir(snapshot)) == ["config.json", "model.safetensors"]

    hub_env.requests.clear()
    env = dict(hub_env.env, HF_HUB_OFFLINE="1")
    done = run_explorer(["sample", "--model", "gpt2", "--prompt", "Hello", "--tokens", "3",
                         "--seed", "0"], env)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Hello")
    assert hub_env.requests == []
    done = run_explorer(["sample", "--model", "distilgpt2", "--prompt", "Hi"], env)
    assert done.returncode == 2
    assert "explorer download distilgpt2" in done.stderr and "HF_HUB_OFFLINE=1" in done.stderr
    assert hub_env.requests == []


def test_environment_hf_token_opens_a_gated_repo(hub_env):
    hub_env.add_repo("org/gated", transformers_files(), token="hf_granted")
    done = run_explorer(["download", "org/gated"], hub_env.env)
    assert done.returncode == 2 and "set HF_TOKEN=hf_" in done.stderr
    done = run_explorer(["download", "org/gated"], dict(hub_env.env, HF_TOKEN="hf_granted"))
    assert done.returncode == 0, done.stderr
    assert os.path.isfile(os.path.join(done.stdout.strip().splitlines()[-1], "model.safetensors"))


# --------------------------------------------------------------------------- memory
@pytest.mark.slow
def test_loading_gpt2_124m_peaks_under_1_3_times_its_parameters(tmp_path):
    """GPT-2 124M's shape (random weights, saved by transformers): resident memory grows by
    at most 1.3x the parameters' bytes while load_hf runs (no second copy of the weights)."""
    if not os.path.exists("/proc/self/clear_refs"):
        pytest.skip("measures the peak resident set with Linux's /proc/self/clear_refs")
    torch.manual_seed(0)
    transformers.GPT2LMHeadModel(transformers.GPT2Config()).save_pretrained(tmp_path)
    script = f"""
import json, warnings
from explorer.io.hf import load_hf
warnings.simplefilter("ignore")
def status(key):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) * 1024 for line in f if line.startswith(key))
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")   # the peak (VmHWM) starts again from the current resident set
before = status("VmRSS")
model = load_hf({str(tmp_path)!r})
print(json.dumps({{"peak": status("VmHWM") - before, "params": model.flat_params.nbytes}}))
"""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")]))
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    ratio = result["peak"] / result["params"]
    print(f"\nload_hf of GPT-2 124M: resident peak {result['peak'] / 2**20:.0f} MiB = {ratio:.2f}x "
          f"the parameters ({result['params'] / 2**20:.0f} MiB)")
    assert ratio <= 1.3
