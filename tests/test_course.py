"""The course's exercises grade themselves (explorer.course).

Every reference solution (notebooks/solutions/) passes its check; every stub as committed in
a notebook fails it and says the exercise is not done; typical wrong answers get feedback
naming the mistake; and each course notebook, with its solutions put into the tagged
exercise cells, runs top to bottom with every check passing.
"""
import json
from collections import Counter

import numpy as np
import pytest
from notebook_helpers import NOTEBOOK_DIR, error_outputs, execute_notebook, notebook_env, notebooks, time_limit_s

from explorer import course
from explorer.course import handout, registry
from explorer.course.tokens import LEARN_CASES, byte_chunks, pair_counts


def _exercise_cells(notebook):
    return handout.exercise_cells(json.loads(notebook.read_text(encoding="utf-8")))


def _source(cell):
    return cell["source"] if isinstance(cell["source"], str) else "".join(cell["source"])


COURSE = [nb for nb in notebooks() if _exercise_cells(nb)]
EXERCISES = [(nb, exercise_id) for nb in COURSE for exercise_id in _exercise_cells(nb)]
IDS = [exercise_id for _, exercise_id in EXERCISES]


def _defined(sources, label):
    """The names that running the sources in order defines (as the notebook's cells would)."""
    namespace = {}
    for exercise_id, source in sources.items():
        exec(compile(source, f"<{label} {exercise_id}>", "exec"), namespace)
    return namespace


@pytest.fixture
def fresh_registry(monkeypatch):
    """Registrations and results made by a test are forgotten after it."""
    monkeypatch.setattr(registry, "_EXERCISES", dict(registry._EXERCISES))
    monkeypatch.setattr(registry, "_RESULTS", {})


# --------------------------------------------------------------------- solutions and stubs
def test_there_are_course_notebooks_with_exercises():
    names = [nb.name for nb in COURSE]
    assert {"01_tokens.ipynb", "06_interpretability.ipynb", "07_sampling.ipynb",
            "08_open_weights.ipynb"} <= set(names), names


def test_every_exercise_has_one_cell_and_one_solution():
    in_cells = [i for _, i in EXERCISES]
    solved = [i for nb in COURSE for i in handout.solutions_for(nb)]
    assert len(in_cells) == len(set(in_cells)), f"an exercise is tagged in two notebooks: {in_cells}"
    assert sorted(in_cells) == sorted(solved), "tagged exercise cells and solution sections differ"
    assert set(in_cells) == set(course.exercises()), (
        "registered exercises without a notebook cell: "
        f"{sorted(set(course.exercises()) - set(in_cells))}; cells without a registered "
        f"exercise: {sorted(set(in_cells) - set(course.exercises()))}")


@pytest.mark.parametrize("notebook, exercise_id", EXERCISES, ids=IDS)
def test_solution_passes_its_check(notebook, exercise_id, fresh_registry):
    defined = _defined(handout.solutions_for(notebook), "solution")
    result = course.check(exercise_id, defined[course.get_exercise(exercise_id).function_name])
    assert result.passed, str(result)


@pytest.mark.parametrize("notebook, exercise_id", EXERCISES, ids=IDS)
def test_untouched_stub_fails_its_check_and_says_so(notebook, exercise_id, fresh_registry):
    stubs = {i: _source(cell) for i, cell in _exercise_cells(notebook).items()}
    defined = _defined(stubs, "stub")
    result = course.check(exercise_id, defined[course.get_exercise(exercise_id).function_name])
    assert not result.passed
    assert "NotImplementedError" in result.message, result.message   # says it is not written yet
    assert "Hint:" in str(result) and "Hint" in result._repr_html_()
    assert course.results()[exercise_id] is result and not course.passed(exercise_id)


# --------------------------------------------------------------------- specific feedback
def _counts_once(ids):
    return {pair: 1 for pair in zip(ids, ids[1:])}


def _merge_drops_last(ids, pair, new_id):
    out = []
    for i in range(len(ids) - 1):
        out.append(new_id if (ids[i], ids[i + 1]) == pair else ids[i])
    return out


def _merge_in_place(ids, pair, new_id):
    i = 0
    while i + 1 < len(ids):
        if (ids[i], ids[i + 1]) == pair:
            ids[i:i + 2] = [new_id]
        i += 1
    return ids


def _merge(ids, pair, new_id):
    from explorer.tokenizers.bpe import _merge_word
    return _merge_word(ids, *pair, new_id)


def _learn(chunks, num_merges, first_id=256, stop=True, across_chunks=False):
    """BPE training with the slips a student might make."""
    chunks = [[b for chunk in chunks for b in chunk]] if across_chunks else chunks
    merges = []
    for _ in range(num_merges):
        counts = sum((pair_counts(chunk) for chunk in chunks), Counter())
        if stop and not counts:
            break
        best = max(counts, key=counts.get)
        chunks = [_merge(chunk, best, first_id + len(merges)) for chunk in chunks]
        merges.append(best)
    return merges


def _lens_without_layernorm(model, name):
    return model.acts[name] @ model.params["wte"].T


def _lens_without_affine(model, name):
    x = model.acts[name]
    normed = (x - x.mean(-1, keepdims=True)) / np.sqrt(x.var(-1, keepdims=True) + 1e-5)
    return normed @ model.params["wte"].T


def _lens_in_place(model, name):
    x = model.acts[name]
    x -= x.mean(-1, keepdims=True)
    x /= np.sqrt((x ** 2).mean(-1, keepdims=True) + 1e-5)
    return (x * model.params["ln_f.weight"] + model.params["ln_f.bias"]) @ model.params["wte"].T


def _induction_at_occurrence(att, tokens):
    from explorer.interp import induction_scores
    return induction_scores(att, tokens, target_offset=0)


def _probs_ignore_temperature(logits, temperature, top_k):
    weights = np.exp(logits - logits.max())
    return weights / weights.sum()


def _probs_not_renormalised(logits, temperature, top_k):
    weights = np.exp((logits - logits.max()) / max(temperature, 1e-12))
    probs = weights / weights.sum()
    if top_k:
        probs[np.argsort(logits)[:-top_k]] = 0.0
    return probs


def _probs_overflow(logits, temperature, top_k):
    if temperature == 0:
        return np.eye(len(logits))[np.argmax(logits)]
    scaled = logits / temperature
    if top_k:
        scaled[np.argsort(scaled)[:-top_k]] = -np.inf
    weights = np.exp(scaled)          # without subtracting the max first
    return weights / weights.sum()


def _probs_no_negative_check(logits, temperature, top_k):
    from explorer.viz.tokens import next_token_distribution
    return next_token_distribution(logits, abs(temperature) if temperature < 0 else temperature, top_k)


def _sample_greedy(logits, temperature, top_k, rng):
    return int(np.argmax(logits))


def _sample_global_random(logits, temperature, top_k, rng):
    from explorer.viz.tokens import next_token_distribution
    probs = next_token_distribution(logits, temperature, top_k)
    return int(np.random.choice(len(probs), p=probs))


def _sample_returns_array(logits, temperature, top_k, rng):
    return np.array([int(np.argmax(logits))])


def _patch_after_block(model, clean, corrupted, answer, other):
    from explorer import interp
    L, T = model.config.n_layer, clean.shape[1]
    post = {(l, t): (f"blocks.{l}.residual2", (slice(None), t)) for l in range(L) for t in range(T)}
    return interp.patch_activations(model, clean, corrupted, answer, other, post).patched


def _patch_the_other_way(model, clean, corrupted, answer, other):
    from explorer import interp
    return interp.patch_residual(model, corrupted, clean, answer, other).patched


def _patch_normalised(model, clean, corrupted, answer, other):
    from explorer import interp
    return interp.patch_residual(model, clean, corrupted, answer, other).normalised


WRONG = [
    ("tokens.count_pairs", _counts_once, "(1, 2) occurs 2 times; your dict says 1"),
    ("tokens.count_pairs", lambda ids: None, "did you forget a `return`"),
    ("tokens.merge", _merge_drops_last, "differ first at position 1: expected 3, got 2"),
    ("tokens.merge", _merge_in_place, "changed the list it was given"),
    ("tokens.learn_merges", lambda c, n: _learn(c, n, across_chunks=True),
     "never occurs inside one chunk"),
    ("tokens.learn_merges", lambda c, n: _learn(c, n, first_id=257),
     "is each new token numbered 256 + the number of merges made before it?"),
    ("tokens.learn_merges", lambda c, n: [(97, 300)], "token 300 does not exist yet"),
    ("tokens.learn_merges", lambda c, n: _learn(c, n, stop=False),
     "learn_merges(byte_chunks('aaa'), 5) raised ValueError"),
    ("tokens.learn_merges", lambda chunks, n: [(b"h", b"u")], "must be a pair (a, b) of token ids"),
    ("interp.induction_scores", _induction_at_occurrence, "the token just after it (s + 1)"),
    ("interp.induction_scores", lambda att, tokens: att.mean(axis=(2, 3)),
     "returned an array of shape (2, 3); expected shape (3,)"),
    ("interp.induction_scores", lambda att, tokens: np.full(att.shape[1], np.nan),
     "returned nan at index 0"),
    ("interp.logit_lens", _lens_without_layernorm, "without the final layernorm"),
    ("interp.logit_lens", _lens_without_affine, "leaves out ln_f.weight and ln_f.bias"),
    ("interp.logit_lens", lambda model, name: model.acts["logits"], "returned the model's final logits"),
    ("interp.logit_lens", _lens_in_place, "changed model.acts['encoded']"),
    ("sampling.next_token_probs", _probs_ignore_temperature, "ignores the temperature"),
    ("sampling.next_token_probs", _probs_not_renormalised, "renormalise after dropping"),
    ("sampling.next_token_probs", _probs_overflow, "raised FloatingPointError: overflow"),
    ("sampling.next_token_probs", _probs_no_negative_check, "a negative temperature means nothing"),
    ("sampling.sample", _sample_greedy, "that is greedy decoding"),
    ("sampling.sample", _sample_global_random, "draw with the rng you are given"),
    ("sampling.sample", _sample_returns_array, "return one token id"),
    ("open_weights.patch_residual", _patch_after_block, "you patched the stream *after* block l"),
    ("open_weights.patch_residual", _patch_the_other_way, "run the corrupted prompt and patch in"),
    ("open_weights.patch_residual", _patch_normalised, "you returned the normalised score"),
    ("open_weights.patch_residual", lambda *args: np.zeros((2, 5)),
     "returned an array of shape (2, 5); expected shape (2, 6)"),
]


@pytest.mark.parametrize("exercise_id, candidate, says", WRONG,
                         ids=[f"{i}-{getattr(f, '__name__', 'lambda')}" for i, f, _ in WRONG])
def test_a_typical_mistake_gets_feedback_that_names_it(exercise_id, candidate, says, fresh_registry):
    result = course.check(exercise_id, candidate)
    assert not result.passed
    assert says in result.message, result.message


def test_learn_merges_cases_have_one_right_answer():
    """The check demands exactly train_bpe's merges: right only if no two pairs ever tie."""
    for text, num_merges in LEARN_CASES:
        words = byte_chunks(text)
        for i in range(num_merges):
            totals = sum((pair_counts(word) for word in words), Counter())
            if not totals:
                break
            ranked = sorted(totals.values(), reverse=True)
            assert len(ranked) == 1 or ranked[0] > ranked[1], f"{text!r}: merge {i} is a tie"
            best = max(totals, key=totals.get)
            words = [_merge(w, best, 256 + i) for w in words]


# --------------------------------------------------------------------- the framework
def test_check_never_raises_for_a_candidate_that_raises(fresh_registry):
    def count_pairs(ids):
        return {pair: ids[99] for pair in zip(ids, ids[1:])}
    result = course.check("tokens.count_pairs", count_pairs)
    assert not result.passed
    assert "raised IndexError" in result.message
    assert "return {pair: ids[99] for pair in zip(ids, ids[1:])}" in result.message  # the line


def test_check_refuses_what_is_not_a_function(fresh_registry):
    result = course.check("tokens.count_pairs", {(1, 2): 1})
    assert not result.passed and "pass `count_pairs`, not `count_pairs(...)`" in result.message


def test_an_unknown_exercise_is_an_error_that_suggests_the_right_one():
    with pytest.raises(KeyError, match="did you mean 'tokens.count_pairs'"):
        course.check("tokens.count_pair", len)


def test_results_keep_the_latest_check_of_each_exercise(fresh_registry):
    assert not course.passed("tokens.count_pairs") and course.results() == {}
    course.check("tokens.count_pairs", lambda ids: None)
    course.check("tokens.count_pairs", pair_counts)
    assert course.passed("tokens.count_pairs")
    assert list(course.results()) == ["tokens.count_pairs"]
    course.clear_results()
    assert course.results() == {}


def test_a_passing_result_reads_well_and_escapes_html(fresh_registry):
    @course.exercise("test.escape", "A <b> title", "f()", hint="use <code>")
    def _check(candidate):
        raise course.Mismatch("got <script>")
    failed = course.check("test.escape", len)
    html = failed._repr_html_()
    assert "&lt;script&gt;" in html and "<script>" not in html and "&lt;code&gt;" in html
    assert str(failed).startswith("NOT YET  test.escape: A <b> title")
    passed = course.check("tokens.count_pairs", pair_counts)
    assert str(passed).startswith("PASSED") and "Hint" not in passed._repr_html_()


def test_a_check_that_cannot_finish_is_a_failed_result(fresh_registry):
    @course.exercise("test.crash", "Crash", "f()")
    def _check(candidate):
        return 1 / 0
    result = course.check("test.crash", len)
    assert not result.passed and "could not finish: ZeroDivisionError" in result.message


def test_a_kernel_exercise_is_one_entry_graded_by_the_lab(monkeypatch, fresh_registry):
    class Report:
        passed = False

        def __str__(self):
            return "gelu_forward: FAILED 1 of 4 comparisons"

        def _repr_html_(self):
            return "<table>the lab's table</table>"
    calls = []
    monkeypatch.setattr("explorer.lab.check_kernel",
                        lambda name, fn, **options: calls.append((name, fn, options)) or Report())
    ex = course.kernel_exercise("gelu_forward", "GELU, forward", timing=False)
    assert ex.id == "kernels.gelu_forward" and ex.function_name == "gelu_forward"

    def my_gelu(out, inp):
        pass
    result = course.check("kernels.gelu_forward", my_gelu)
    assert calls == [("gelu_forward", my_gelu, {"timing": False})]
    assert not result.passed and "FAILED 1 of 4" in str(result)
    assert "the lab's table" in result._repr_html_()


def test_an_id_cannot_be_taken_twice(fresh_registry):
    course.kernel_exercise("gelu_forward")
    with pytest.raises(ValueError, match="already registered"):
        @course.exercise("kernels.gelu_forward", "again", "gelu_forward(out, inp)")
        def _check(candidate):
            pass


# --------------------------------------------------------------------- handing out
def test_solutions_file_sections_and_injection():
    text = ('"""doc"""\n\n# %% exercise: a.one\nimport math\n\ndef one():\n    return 1\n\n'
            '# %% exercise: a.two\ndef two():\n    return 2\n')
    solutions = handout.parse_solutions(text)
    assert solutions == {"a.one": "import math\n\ndef one():\n    return 1\n",
                         "a.two": "def two():\n    return 2\n"}
    nb = {"cells": [{"cell_type": "code", "source": "def one(): raise NotImplementedError",
                     "metadata": {"tags": ["exercise:a.one"]}, "outputs": [], "execution_count": 3},
                    {"cell_type": "markdown", "source": "text", "metadata": {}}]}
    with pytest.raises(ValueError, match="no cell tagged for a.two"):
        handout.with_solutions(nb, solutions)
    solved = handout.with_solutions(nb, {"a.one": solutions["a.one"]})
    assert solved["cells"][0]["source"] == solutions["a.one"]
    assert nb["cells"][0]["source"].startswith("def one(): raise"), "the original was changed"


def test_handout_will_not_overwrite_the_students_notebooks():
    with pytest.raises(SystemExit):
        handout.main([str(NOTEBOOK_DIR / "01_tokens.ipynb"), "--out", str(NOTEBOOK_DIR)])


def test_handout_writes_a_solved_copy(tmp_path, capsys):
    nbformat = pytest.importorskip("nbformat")
    handout.main([str(NOTEBOOK_DIR / "01_tokens.ipynb"), "--out", str(tmp_path)])
    solved = nbformat.read(tmp_path / "01_tokens.ipynb", as_version=4)
    sources = [_source(c) for c in handout.exercise_cells(solved).values()]
    assert sources and not any("NotImplementedError" in s for s in sources)
    assert "3 exercises solved" in capsys.readouterr().out


# --------------------------------------------------------------------- whole notebooks
FINAL_CHECK = '''
from explorer import course as _course
_results = _course.results()
_never = [i for i in {ids!r} if i not in _results]
assert not _never, f"these exercises were never checked: {{_never}}"
_failed = [str(_results[i]) for i in {ids!r} if not _results[i].passed]
assert not _failed, "\\n\\n".join(_failed)
print("every check passed:", ", ".join({ids!r}))
'''


@pytest.mark.slow
@pytest.mark.parametrize("notebook", COURSE, ids=lambda p: p.name)
def test_notebook_with_solutions_passes_every_check(notebook, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    pytest.importorskip("nbclient")
    nb = handout.with_solutions(nbformat.read(notebook, as_version=4), handout.solutions_for(notebook))
    ids = list(handout.exercise_cells(nb))
    nb.cells.append(nbformat.v4.new_code_cell(FINAL_CHECK.format(ids=ids)))
    limit = time_limit_s(notebook)
    with notebook_env(notebook, tmp_path) as env:
        elapsed = execute_notebook(nb, f"{notebook.stem}.solved.ipynb", tmp_path, limit, extra_env=env)
    assert not error_outputs(nb), "\n".join(error_outputs(nb))
    assert elapsed < limit, (f"{notebook.name} with solutions took {elapsed:.0f} s; its stated "
                             f"limit is {limit} s (notebook_helpers.TIME_LIMITS_S)")
