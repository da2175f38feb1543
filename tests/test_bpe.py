"""Tests of data/bpe.py: the byte-level BPE trainer and its tiktoken encoding."""
import random
from collections import Counter

import pytest
import regex

from data import bpe

TEXT = ("The red fox runs fast. The small boat sails on the lake. 7 + 5 = 12. "
        "Dorvan is a baker and Tala is a sailor; the baker bakes bread. ") * 20


@pytest.fixture(scope="module")
def enc():
    return bpe.encoding(bpe.train(TEXT, 300))


def naive_train(text, n_ranks):
    """Reference: recount every pair after each merge (slow, obviously right); same tie-break as ours."""
    words = Counter(regex.findall(bpe.PAT, text))
    seqs = {w: list(w.encode()) for w in words}
    vocab = [bytes([i]) for i in range(256)]
    while len(vocab) < n_ranks:
        pairs = Counter()
        for w, n in words.items():
            for p in zip(seqs[w], seqs[w][1:]):
                pairs[p] += n
        if not pairs:
            break
        best = min(pairs, key=lambda p: (-pairs[p], p))
        merged = vocab[best[0]] + vocab[best[1]]
        new = vocab.index(merged) if merged in vocab else len(vocab)
        if new == len(vocab):
            vocab.append(merged)
        for w, s in seqs.items():
            out, i = [], 0
            while i < len(s):
                if i + 1 < len(s) and (s[i], s[i + 1]) == best:
                    out.append(new)
                    i += 2
                else:
                    out.append(s[i])
                    i += 1
            seqs[w] = out
    return {b: i for i, b in enumerate(vocab)}


def test_incremental_trainer_equals_naive_recount():
    assert bpe.train(TEXT, 320) == naive_train(TEXT, 320)


def test_roundtrip_arbitrary_unicode(enc):
    samples = ["", "plain ascii", "emoji 🦊🚀👩‍👩‍👧", "CJK 漢字かなカナ한국어", "combining e\u0301 n\u0303 a\u0308\u0301",
               "RTL مرحبا שלום", "tabs\tand\nnewlines\r\n  spaces", "\x00\x01 control", "digits 0123456789 ٣٤"]
    rng = random.Random(0)
    for _ in range(200):  # random code points from the whole Unicode range (minus surrogates)
        samples.append("".join(chr(rng.choice([rng.randrange(0x20, 0x7f), rng.randrange(0xa0, 0xd7ff),
                                                rng.randrange(0xe000, 0x10ffff)])) for _ in range(rng.randrange(1, 30))))
    for s in samples:
        assert enc.decode(enc.encode(s)) == s


def test_special_tokens_follow_the_ranks_in_order(enc):
    n = enc.n_vocab - 3
    assert [enc.encode(t, allowed_special="all")[0] for t in bpe.SPECIAL_TOKENS] == [n, n + 1, n + 2]
    ids = enc.encode("<|user|>hi<|assistant|>yo<|endoftext|>", allowed_special="all")
    assert ids[0] == n + 1 and ids[-1] == n and enc.decode(ids) == "<|user|>hi<|assistant|>yo<|endoftext|>"
    with pytest.raises(ValueError):  # a special token inside ordinary text is refused unless allowed
        enc.encode("text <|endoftext|>")


def test_digits_are_one_token_each(enc):
    assert len(enc.encode("1234567")) == 7
    assert [enc.decode([t]) for t in enc.encode(" 12")] == [" 1", "2"]


def test_save_and_load_ranks_roundtrip(tmp_path):
    ranks = bpe.train(TEXT, 300)
    bpe.save_ranks(tmp_path / "tok.bpe", ranks)
    again = bpe.load_ranks(tmp_path / "tok.bpe")
    assert again == ranks and bpe.fingerprint(again) == bpe.fingerprint(ranks)
    with pytest.raises(FileNotFoundError, match="world.py"):
        bpe.load_ranks(tmp_path / "missing.bpe")


def test_excluded_words_are_not_merged_whole():
    ranks = bpe.train(TEXT, 400, exclude={"Dorvan"})
    assert b" Dorvan" not in ranks and b" baker" in ranks


def test_trainer_compresses_its_corpus(enc):
    assert len(enc.encode(TEXT)) < len(TEXT.encode()) / 2  # 44 merges already make most words one token
