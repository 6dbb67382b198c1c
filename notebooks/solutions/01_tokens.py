"""Reference solutions of 01_tokens.ipynb, for instructors (keep this folder out of the
students' copies). Each `# %% exercise: <id>` section replaces the notebook cell tagged
`exercise:<id>`: see explorer/course/handout.py."""

# %% exercise: tokens.count_pairs
def count_pairs(ids):
    counts = {}
    for pair in zip(ids, ids[1:]):
        counts[pair] = counts.get(pair, 0) + 1
    return counts

# %% exercise: tokens.merge
def merge(ids, pair, new_id):
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and (ids[i], ids[i + 1]) == pair:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out

# %% exercise: tokens.learn_merges
def learn_merges(chunks, num_merges):
    chunks = [list(chunk) for chunk in chunks]
    merges = []
    for _ in range(num_merges):
        counts = {}
        for chunk in chunks:
            for pair, n in count_pairs(chunk).items():
                counts[pair] = counts.get(pair, 0) + n
        if not counts:
            break                       # every chunk is a single token: nothing left to merge
        best = max(counts, key=counts.get)
        new_id = 256 + len(merges)
        merges.append(best)
        chunks = [merge(chunk, best, new_id) for chunk in chunks]
    return merges
