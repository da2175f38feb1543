"""A byte-level BPE tokenizer, trained on our corpus and run by tiktoken.

Paper analogue: GPT-3's tokenizer (the GPT-2 byte-level BPE, Radford et al. 2019; Sennrich et al. 2016),
which InstructGPT inherits. Ours is the same algorithm with a small vocabulary (test ~512, cpu ~3000,
gpu ~8000) learned from data/<preset>/corpus.txt, plus three special tokens:
`<|endoftext|>`, `<|user|>`, `<|assistant|>` (ids right after the learned ranks, in that order).

Training (`train`):
1. Pre-tokenise the text with a GPT-2-like regex, except that digits are split one per piece, so that
   arithmetic is seen digit by digit ("12" -> "1", "2"), which a tiny model can learn.
2. Count each distinct piece once (`Counter`): a 3 MB corpus has only a few thousand distinct words.
3. Start from the 256 single bytes; repeatedly merge the most frequent adjacent pair of tokens, weighting
   each word by its count. Only words that contain the merged pair are touched, and the pair counts are
   updated incrementally (a heap with lazy deletion finds the next best pair), so 1 MB takes seconds.
   (tiktoken's `_educational` trainer recounts everything after each merge: correct but ~10 min per MB.)

The merge order *is* the rank: tiktoken encodes by repeatedly merging the adjacent pair whose
concatenation has the lowest rank, which replays our training merges. Ranks are saved one
`base64(token) rank` per line, tiktoken's own file format.

Usage: `enc = encoding(load_ranks("data/cpu/tokenizer.bpe")); enc.encode(text, allowed_special="all")`.
"""
import base64
import hashlib
import heapq
import os
from collections import Counter, defaultdict

import regex  # installed with tiktoken (one of its dependencies); stdlib `re` has no \p{L}
import tiktoken

# GPT-2's pattern, with ` ?\p{N}` (one digit per piece) instead of ` ?\p{N}+`.
PAT = r"""'(?:[sdmt]|ll|ve|re)| ?\p{L}+| ?\p{N}| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
SPECIAL_TOKENS = ["<|endoftext|>", "<|user|>", "<|assistant|>"]


def train(text, n_ranks, pat=PAT, exclude=()):
    """Learn up to n_ranks byte-level BPE tokens (256 bytes + merges) from text; {token bytes: rank}.
    Fewer if the text runs out of pairs (every distinct word already one token). Pieces in `exclude`
    (e.g. made-up names) are not counted, so they are later split into a few sub-word pieces."""
    if n_ranks < 256:
        raise ValueError(f"need at least 256 ranks (one per byte), got {n_ranks}")
    exclude = set(exclude)
    counts = Counter(w for w in regex.findall(pat, text) if w.strip() not in exclude)
    words = [list(w.encode("utf-8")) for w in counts]  # each word as a list of token ids
    freqs = list(counts.values())
    vocab = [bytes([i]) for i in range(256)]  # token id -> bytes
    index = {b: i for i, b in enumerate(vocab)}  # bytes -> token id
    pair_counts = defaultdict(int)  # (id, id) -> weighted count
    where = defaultdict(set)  # (id, id) -> indices of words containing it
    for wi, w in enumerate(words):
        for p in zip(w, w[1:]):
            pair_counts[p] += freqs[wi]
            where[p].add(wi)
    heap = [(-c, p) for p, c in pair_counts.items()]  # most frequent first; ties: smallest ids first
    heapq.heapify(heap)
    while len(vocab) < n_ranks and heap:
        negc, p = heapq.heappop(heap)
        c = pair_counts.get(p, 0)
        if c <= 0:
            continue
        if c != -negc:  # stale heap entry: re-queue with the current count
            heapq.heappush(heap, (-c, p))
            continue
        merged = vocab[p[0]] + vocab[p[1]]
        new = index.get(merged)
        if new is None:  # (the same bytes can be reached by two different pairs: keep one id)
            new = index[merged] = len(vocab)
            vocab.append(merged)
        changed = set()
        for wi in sorted(where.pop(p, ())):
            w, f = words[wi], freqs[wi]
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and w[i] == p[0] and w[i + 1] == p[1]:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            if len(out) == len(w):
                continue
            for q in zip(w, w[1:]):  # remove the word's old pairs ...
                pair_counts[q] -= f
                changed.add(q)
            for q in zip(out, out[1:]):  # ... and add its new ones
                pair_counts[q] += f
                where[q].add(wi)
                changed.add(q)
            words[wi] = out
        pair_counts.pop(p, None)
        for q in sorted(changed):
            if q != p and pair_counts.get(q, 0) > 0:
                heapq.heappush(heap, (-pair_counts[q], q))
    return {b: i for i, b in enumerate(vocab)}


def save_ranks(path, ranks):
    """Write ranks in tiktoken's format: one `base64(token) rank` per line, by rank."""
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        for tok, r in sorted(ranks.items(), key=lambda kv: kv[1]):
            f.write(f"{base64.b64encode(tok).decode()} {r}\n")
    os.replace(tmp, path)


def load_ranks(path):
    """Read ranks written by save_ranks (or any tiktoken .tiktoken file)."""
    if not os.path.exists(path):
        raise FileNotFoundError(f"no tokenizer at {path}: run `python data/world.py --preset <preset>` first")
    ranks = {}
    with open(path) as f:
        for n, line in enumerate(f, 1):
            parts = line.split()
            if not parts:
                continue
            if len(parts) != 2:
                raise ValueError(f"{path}:{n}: expected 'base64token rank', got {line.strip()[:40]!r}")
            ranks[base64.b64decode(parts[0])] = int(parts[1])
    return ranks


def encoding(ranks, name=None):
    """A tiktoken.Encoding from our ranks, with the special tokens right after them."""
    special = {t: len(ranks) + i for i, t in enumerate(SPECIAL_TOKENS)}
    return tiktoken.Encoding(name=name or f"mini-bpe-{len(ranks) + len(special)}-{fingerprint(ranks)[:8]}",
                             pat_str=PAT, mergeable_ranks=ranks, special_tokens=special)


def fingerprint(ranks):
    """A short hash identifying a tokenizer (so a checkpoint can refuse a different one)."""
    h = hashlib.sha256()
    for tok, r in sorted(ranks.items(), key=lambda kv: kv[1]):
        h.update(base64.b64encode(tok) + b" %d\n" % r)
    return h.hexdigest()
