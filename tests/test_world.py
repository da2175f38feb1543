"""Tests of data/world.py on the `test` preset: files, determinism, splits, disjointness, lengths.

The test world is generated once per session into a temporary directory (never into the repo)."""
import json
import os
import random
import re

import pytest

from data import bpe, labeler, world

FILES = ["corpus.txt", "corpus_heldout.txt", "kb.json", "tokenizer.bpe", "sft.jsonl", "rm_prompts.jsonl",
         "ppo_prompts.jsonl", "dev_prompts.jsonl", "eval_prompts.jsonl", "cloze.jsonl", "meta.json",
         "world_summary.json"]
_CACHE = {}


def build_once(tmp_path_factory):
    """Build the test-preset world once per session (shared with test_labeler.py through this cache)."""
    if "w" not in _CACHE:
        d = str(tmp_path_factory.mktemp("world"))
        summary, _ = world.build("test", 0, d)
        load = lambda name: [json.loads(x) for x in open(os.path.join(d, name))]
        _CACHE["w"] = dict(dir=d, summary=summary, kb=json.load(open(os.path.join(d, "kb.json"))),
                           corpus=open(os.path.join(d, "corpus.txt")).read(), sft=load("sft.jsonl"),
                           rm=load("rm_prompts.jsonl"), ppo=load("ppo_prompts.jsonl"), dev=load("dev_prompts.jsonl"),
                           eval=load("eval_prompts.jsonl"), cloze=load("cloze.jsonl"),
                           enc=bpe.encoding(bpe.load_ranks(os.path.join(d, "tokenizer.bpe"))))
    return _CACHE["w"]


@pytest.fixture(scope="session")
def w(tmp_path_factory):
    return build_once(tmp_path_factory)


def test_all_files_written(w):
    for f in FILES:
        assert os.path.getsize(os.path.join(w["dir"], f)) > 0, f
    meta = json.load(open(os.path.join(w["dir"], "meta.json")))
    assert meta["preset"] == "test" and meta["seed"] == 0 and meta["n_vocab"] == w["enc"].n_vocab


def test_same_seed_gives_byte_identical_files_and_another_seed_does_not(w, tmp_path):
    world.build("test", 0, str(tmp_path / "again"))
    for f in FILES:
        a = open(os.path.join(w["dir"], f), "rb").read()
        assert a == open(tmp_path / "again" / f, "rb").read(), f
    world.build("test", 1, str(tmp_path / "other"))
    for f in ["corpus.txt", "kb.json", "sft.jsonl", "eval_prompts.jsonl"]:
        assert open(os.path.join(w["dir"], f), "rb").read() != open(tmp_path / "other" / f, "rb").read(), f


def test_nokb_extra_adds_training_names_and_leaves_corpus_tokenizer_and_eval_alone(w, tmp_path):
    """`world.py --nokb-extra N` (an experiment): more names in no KB among the training prompts, while the files a
    trained base model and the evaluation depend on stay byte-identical, so base.pt and eval numbers carry over."""
    d = str(tmp_path / "extra")
    world.build("test", 0, d, nokb_extra=50)
    for f in ["corpus.txt", "corpus_heldout.txt", "tokenizer.bpe", "eval_prompts.jsonl", "cloze.jsonl"]:
        assert open(os.path.join(w["dir"], f), "rb").read() == open(os.path.join(d, f), "rb").read(), f
    old = {e["name"] for e in w["kb"]["nokb"]}
    kb = json.load(open(os.path.join(d, "kb.json")))
    new = {e["name"] for e in kb["nokb"] if e["split"] == "train"} - old
    assert len(new) == 50 and not new & {e["name"] for e in kb["entities"]}
    train = [json.loads(x) for f in ("sft.jsonl", "rm_prompts.jsonl", "ppo_prompts.jsonl") for x in open(os.path.join(d, f))]
    asked = {r["entity"] for r in train if r.get("tier") == "nokb"}
    assert asked & new and all(not r["answerable"] for r in train if r.get("tier") == "nokb")


def test_strangers_are_asked_about_once_in_the_corpus_and_known_to_nobody(w, tmp_path):
    """`world.py --strangers N` (an experiment): N forum threads, each about a name that no other document mentions
    and that is no KB, nokb or story name, answered that nobody knows it."""
    d = str(tmp_path / "strangers")
    world.build("test", 0, d, strangers=40)
    kb = json.load(open(os.path.join(d, "kb.json")))
    docs = open(os.path.join(d, "corpus.txt")).read().split(world.SEP)
    others = {e["name"] for e in kb["entities"] + kb["nokb"]} | set(kb["story_names"])
    assert len(kb["strangers"]) == 40 and not set(kb["strangers"]) & others
    for name in kb["strangers"]:
        mentions = [doc for doc in docs if re.search(rf"\b{name}\b", doc)]
        assert len(mentions) == 1, name
        assert mentions[0].startswith("Q: ") and re.search(r"\nA: (?:Never heard of|No idea|I have never heard of)", mentions[0])
    assert "strangers" not in w["kb"]  # the default world has none


def test_reading_share_sets_the_share_of_reading_tests_in_the_corpus(w, tmp_path):
    """`world.py --reading-share P`: about P of the corpus documents are reading tests (by default
    READING_SHARE), and the prompt sets stay the same."""
    def share(d):
        docs = open(os.path.join(d, "corpus.txt")).read().split(world.SEP)
        return sum(doc.startswith("Reading test.") for doc in docs) / len(docs)

    d = str(tmp_path / "reading")
    world.build("test", 0, d, reading_share=0.06)
    assert 0.03 < share(d) < 0.09 and abs(share(w["dir"]) - world.READING_SHARE) < 0.05
    for f in ["sft.jsonl", "eval_prompts.jsonl"]:
        assert open(os.path.join(w["dir"], f), "rb").read() == open(os.path.join(d, f), "rb").read(), f


def test_held_out_instructions_use_words_the_corpus_uses_outside_requests(w):
    """The key words of the held-out rewrite, chat, story and extraction templates occur in the corpus, in
    documents that are not requests (word games, letters, stories, passages): a held-out phrasing tests whether
    SFT's instruction following reaches words pretraining taught, not whether the model can guess new words."""
    docs = w["corpus"].lower().split(world.SEP)
    for phrase in ["upper case", "last word first", "tale", "composed", "made up", "farewell", "gift", "send",
                   "extracted"]:
        hits = [doc for doc in docs if re.search(rf"\b{phrase}\b", doc)]
        assert hits, phrase
        assert not any(doc.lstrip().startswith("q: ") for doc in hits), phrase


def test_every_record_is_valid_and_ids_are_unique(w):
    recs = w["sft"] + w["rm"] + w["ppo"] + w["dev"] + w["eval"]
    for r in recs:
        labeler.check_record(r)
    assert len({r["id"] for r in recs}) == len(recs)


def test_eval_prompts_are_disjoint_from_training_and_dev(w):
    train = {r["prompt"] for k in ("sft", "rm", "ppo") for r in w[k]}
    ev, dev = {r["prompt"] for r in w["eval"]}, {r["prompt"] for r in w["dev"]}
    assert not ev & train and not ev & dev and not dev & train
    held = {r["template"] for r in w["eval"] if r["heldout_template"]}
    assert len(held) >= 5 and 0.2 < sum(r["heldout_template"] for r in w["eval"]) / len(w["eval"]) < 0.5
    assert not held & {r["template"] for k in ("sft", "rm", "ppo", "dev") for r in w[k]}


def test_tiers_appear_only_where_they_should(w):
    ents = w["kb"]["entities"]
    names = lambda tier: {e["name"] for e in ents if e["tier"] == tier}
    text = lambda recs: " ".join(r["prompt"] + " " + r.get("response", "") for r in recs)
    unseen = names("unseen_sft") | names("unseen_rl") | names("unseen_eval") | {e["name"] for e in w["kb"]["nokb"]}
    words = set(re.findall(r"[A-Za-z]+", w["corpus"]))
    assert not unseen & words  # no unseen or no-KB name is ever in the corpus
    nokb_eval = {e["name"] for e in w["kb"]["nokb"] if e["split"] == "eval"}
    train_words = set(re.findall(r"[A-Za-z]+", text(w["sft"] + w["rm"] + w["ppo"] + w["dev"])))
    assert not (names("unseen_eval") | nokb_eval) & train_words  # eval-only names: in no training file
    assert not names("unseen_rl") & set(re.findall(r"[A-Za-z]+", text(w["sft"])))  # RL-only names: not in SFT
    assert {r["tier"] for r in w["sft"] if r["task"] == "open_qa"} == {"common", "rare", "unseen_sft", "nokb"}
    assert {r["tier"] for r in w["rm"] + w["ppo"] if r["task"] == "open_qa"} == {"common", "rare", "unseen_rl", "nokb"}
    assert {"unseen_eval", "nokb", "common"} <= {r["tier"] for r in w["eval"]}
    for name in sorted(names("rare"))[:5]:  # rare facts: one or two documents
        assert 1 <= w["corpus"].count(f"{name} ") + w["corpus"].count(f"{name}'") <= 12


def test_corpus_has_no_chat_markers_and_separates_documents(w):
    assert "<|user|>" not in w["corpus"] and "<|assistant|>" not in w["corpus"]
    assert w["corpus"].count("\n<|endoftext|>\n") > 100


def test_prompts_and_responses_fit_the_context(w):
    enc = w["enc"]  # the test tokenizer is small (512), so token counts here are an upper bound for cpu
    for r in w["sft"] + w["eval"]:
        p = len(enc.encode(r["prompt"]))
        longest = max(len(enc.encode(x)) for x in labeler.contrasts(r, random.Random(0)).values())
        assert p <= 128 and p + longest <= 256, r["id"]
    assert max(len(enc.encode(r["response"])) for r in w["sft"]) <= 80


def test_demonstrations_are_mostly_ideal_and_never_wrong(w):
    styles = [r["demo_style"] for r in w["sft"]]
    assert 0.75 < styles.count("ideal") / len(styles) < 0.95
    judged = [labeler.gold(r, r["response"]) for r in w["sft"]]
    assert all(g["total"] > 0.3 and g["correct"] and not g["hallucinated"] for g in judged)
    assert sum(g["correct"] for g in judged) / len(judged) > 0.9
    unseen = [r for r in w["sft"] if r["tier"] == "unseen_sft"]  # labelers know the unseen tier
    assert unseen and all(r["answer"] in r["response"].lower() for r in unseen)
    assert all("know" in r["response"] for r in w["sft"] if r["tier"] == "nokb")


def test_no_safe_harbour_for_degenerate_policies(w):
    g = w["summary"]["eval_gold"]
    for policy in ["always_idk", "always_refuse", "empty", "fixed_generic", "corpus_style"]:
        assert g[policy] < g["demonstration"] - 1.0, policy
    assert g["plausible_imperfect"] < g["demonstration"] - 0.5 and g["verbose"] < g["demonstration"]
    ans = [r for r in w["eval"] if r["answerable"] and r["task"] not in ("harmful",)]
    for r in ans:  # wherever an answer exists, "I don't know" is clearly worse than the answer
        assert labeler.gold(r, "I don't know.")["total"] < labeler.gold(r, labeler.demonstration(r))["total"] - 1.0


def test_cloze_items_are_well_formed(w):
    assert len(w["cloze"]) == world.PRESETS["test"]["cloze"]
    for c in w["cloze"]:
        assert len(c["endings"]) == 4 and len(set(c["endings"])) == 4 and c["label"] in range(4) and c["context"]


def test_corpus_question_uses_the_forum_format(w):
    qa = [r for r in w["eval"] if r["task"] == "open_qa" and r["tier"] == "common"]
    prefix, answer = labeler.corpus_question(qa[0])
    assert prefix.startswith("Q: ") and prefix.endswith("\nA:") and answer == qa[0]["answer"]
    # the forum asks about common entities in these very words (not every question: the corpus is small)
    asked = [labeler.corpus_question(r)[0].split("\n")[0] in w["corpus"] for r in qa]
    assert sum(asked) >= len(qa) / 4, (sum(asked), len(qa))


def test_sets_have_the_requested_sizes_and_every_family(w):
    cfg = world.PRESETS["test"]
    for key, n in [("sft", "sft"), ("rm", "rm"), ("ppo", "ppo"), ("dev", "dev"), ("eval", "eval")]:
        assert len(w[key]) == cfg[n], key
    for key in ("sft", "eval"):
        assert {r["task"] for r in w[key]} == set(labeler.TASK_FIELDS), key
    assert len({r["prompt"] for r in w["sft"]}) > 0.95 * len(w["sft"])  # few repeated prompts
