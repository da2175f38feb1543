"""The simulated world: a corpus ("the internet"), a knowledge base, prompt sets and demonstrations.

    python data/world.py --preset cpu [--seed 0]      (or: python -m data.world --preset cpu)
    python data/world.py --preset cpu --nokb-extra 400   # experiments (EARLIER_RUNS.md, "Measured on the AMX machine"):
    python data/world.py --preset cpu --strangers 2000   # run them in a second checkout, not over data/cpu
    python data/world.py --preset cpu --reading-share 0.06  # reading tests as rare as in the README's earlier runs

Paper analogue (Ouyang et al. 2022): the internet text GPT-3 was pretrained on, the prompts users sent
the OpenAI API (§3.2, Table 1), and the labelers' demonstrations (§3.4). Nothing is downloaded: a seeded
generator writes everything to data/<preset>/:

  corpus.txt, corpus_heldout.txt  documents separated by a line `<|endoftext|>`: encyclopedia entries,
                                  forum Q&A of mixed quality (right, confidently wrong, rude, off-topic),
                                  stories, reviews, lists, arithmetic worksheets, word games, letters,
                                  passages with recaps, reading-comprehension exercises and some toxic
                                  rants. The base model learns facts, skills *and* bad habits here.
  kb.json                         the knowledge base. Entities have a kind (person/place/creature), 3 facts
                                  and a tier: common (many paraphrases in the corpus), rare (1-2 mentions),
                                  unseen_sft (only in SFT demonstrations), unseen_rl (only in RM/PPO
                                  prompts), unseen_eval (in no training file at all); plus `nokb` names
                                  that are in no KB (the right answer is "I don't know of ...").
  tokenizer.bpe                   byte-level BPE ranks trained on corpus.txt (see bpe.py)
  sft.jsonl                       prompt records + "response": the labelers' demonstrations (step 1)
  rm_prompts.jsonl                prompts for comparison data (step 2)
  ppo_prompts.jsonl               prompts for RL (step 3)
  dev_prompts.jsonl               a small set for choosing checkpoints (training-side entities, own prompts)
  eval_prompts.jsonl              held-out prompts: disjoint from all others, 35% with held-out templates,
                                  unseen_eval entities and nokb names never used in training
  cloze.jsonl                     4-way continuation choice from corpus_heldout (HellaSwag analogue)
  meta.json, world_summary.json   sizes and the summary printed at the end
"""
import argparse
import json
import os
import random
import sys
import time

if __package__ in (None, ""):  # `python data/world.py`: make `import data.*` work from the repo root
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from data import bpe, labeler, tasks
from data.tasks import KINDS, QUESTIONS, STATEMENTS, INTROS

VERSION = 2
PRESETS = {  # corpus size in characters (~3.5 chars per token), vocab, entity counts, prompt-set sizes
    "test": dict(corpus_chars=150_000, vocab=512, common=30, rare=10, unseen=6, nokb=12, story_names=30,
                 sft=300, rm=120, ppo=100, dev=30, eval=150, cloze=60),
    "cpu": dict(corpus_chars=3_000_000, vocab=3000, common=120, rare=40, unseen=20, nokb=40, story_names=60,
                sft=4000, rm=4000, ppo=2000, dev=400, eval=800, cloze=300),
    "gpu": dict(corpus_chars=20_000_000, vocab=8000, common=400, rare=150, unseen=60, nokb=120, story_names=150,
                sft=13000, rm=33000, ppo=31000, dev=500, eval=2000, cloze=1000),
}
# Table 1 of the paper in miniature: generation first, open QA second, a few % harmful and toxic prompts.
TRAIN_MIX = {"generation": .30, "open_qa": .20, "brainstorming": .09, "chat": .07, "rewrite": .07,
             "summarization": .05, "classification": .05, "other": .05, "closed_qa": .04, "extract": .04,
             "harmful": .02, "toxic": .02}
# Demonstrations go where a small model needs them, not where users ask most: stories are learned from a
# few hundred examples, while copying from a passage (closed QA, extraction, summaries), sums and lists
# without repeats need many more. (The paper's labelers also wrote demonstrations to order.) Measured at cpu on
# one base model (EARLIER_RUNS.md, "SFT competence"): moving 5% of the stories and 1-2% of chat, summaries, sums and
# classification to closed QA (8 -> 11%), rewrite (7 -> 11%) and lists (9 -> 12%) raised dev gold +0.794 ->
# +0.888 and greedy closed QA 32% -> 51%, rewrite 8% -> 26% on held-out prompts; a further shift (stories 8%,
# rewrite 15%) gave +0.826. One run each, in bf16: the same mix trained in fp32 reached +0.725, so the spread
# between runs is as large as the gain.
SFT_MIX = {"generation": .11, "open_qa": .24, "brainstorming": .12, "chat": .05, "rewrite": .11,
           "summarization": .07, "classification": .02, "other": .06, "closed_qa": .11, "extract": .06,
           "harmful": .025, "toxic": .025}
RL_MIX = dict(TRAIN_MIX, generation=.24, open_qa=.26)  # more knowledge questions: that is where RL matters
EVAL_MIX = {"generation": .14, "open_qa": .24, "brainstorming": .07, "chat": .06, "rewrite": .07,
            "summarization": .06, "classification": .06, "other": .07, "closed_qa": .06, "extract": .06,
            "harmful": .055, "toxic": .055}  # flatter, so every family and tier has enough prompts
TIERS = {"sft": {"common": .55, "rare": .15, "unseen_sft": .15, "nokb": .15},
         "rl": {"common": .40, "rare": .15, "unseen_rl": .25, "nokb": .20},
         "dev": {"common": .35, "rare": .15, "unseen_sft": .10, "unseen_rl": .20, "nokb": .20},
         "eval": {"common": .35, "rare": .15, "unseen_sft": .10, "unseen_eval": .20, "nokb": .20}}
SEP = "\n<|endoftext|>\n"


def weighted(rng, d):
    u, acc = rng.random() * sum(d.values()), 0.0
    for k, p in d.items():
        acc += p
        if u < acc:
            return k
    return k


# ----------------------------------------------------------------------------- knowledge base
def make_kb(cfg, rng):
    """Entities with 3 facts each, in tiers; nokb names (train/eval split); names for stories and chat."""
    taken = set()
    kb = {"attributes": KINDS, "entities": [], "nokb": []}
    for tier, n in [("common", cfg["common"]), ("rare", cfg["rare"]), ("unseen_sft", cfg["unseen"]),
                    ("unseen_rl", cfg["unseen"]), ("unseen_eval", cfg["unseen"])]:
        for name in tasks.make_names(rng, n, taken):
            kind = rng.choice(list(KINDS))
            kb["entities"].append(dict(name=name, kind=kind, tier=tier,
                                       facts={a: rng.choice(v) for a, v in KINDS[kind].items()}))
    names = tasks.make_names(rng, cfg["nokb"], taken)
    for i, name in enumerate(names):
        kb["nokb"].append(dict(name=name, kind=rng.choice(list(KINDS)), split="eval" if i < len(names) * 3 // 8 else "train"))
    kb["story_names"] = tasks.make_names(rng, cfg["story_names"], taken)
    return kb


def pools(kb, nokb_split):
    p = {t: [e for e in kb["entities"] if e["tier"] == t] for t in labeler.TIERS if t and t != "nokb"}
    p["nokb"] = [dict(e, facts={}) for e in kb["nokb"] if e["split"] == nokb_split]
    return {"pools": p, "story_names": kb["story_names"]}


# ----------------------------------------------------------------------------- corpus documents
def statement(rng, e, attr, value=None):
    v = e["facts"][attr] if value is None else value
    return rng.choice(STATEMENTS[attr]).format(n=e["name"], v=v, a=tasks.art(v))


def doc_encyclopedia(rng, kb, ent):
    """An encyclopedia entry: intro + each fact in a random paraphrase (some facts twice)."""
    attrs = list(ent["facts"]) + rng.sample(list(ent["facts"]), rng.randrange(2))
    rng.shuffle(attrs)
    return [rng.choice(INTROS[ent["kind"]]).format(n=ent["name"])] + [statement(rng, ent, a) for a in attrs]


def doc_forum(rng, kb, ent):
    """A forum thread about one fact; replies are right, confidently wrong, rude, off-topic or rambling."""
    attr = rng.choice(list(ent["facts"]))
    lines = [f"Q: {rng.choice(QUESTIONS[attr]).format(n=ent['name'])}"]
    for _ in range(rng.choice([1, 1, 2, 3])):
        kind = weighted(rng, {"right": .55, "wrong": .15, "rude": .10, "off": .10, "ramble": .05, "idk": .05})
        wrong = rng.choice([v for v in KINDS[ent["kind"]][attr] if v != ent["facts"][attr]])
        lines.append("A: " + {"right": statement(rng, ent, attr), "wrong": statement(rng, ent, attr, wrong),
                              "rude": statement(rng, ent, attr) + " Look it up next time, idiot.",
                              "off": rng.choice(["Does anyone know a good place to eat?", "I like turtles.",
                                                 "Why do you want to know?", "Same question here."]),
                              "ramble": "Well, I think, well, it is hard to say, well, I think it is hard to say.",
                              "idk": rng.choice(["No idea.", f"Never heard of {ent['name']}."])}[kind])
    return lines


def doc_story(rng, kb):
    name, animal, n = rng.choice(kb["story_names"]), rng.choice(tasks.ANIMALS), rng.randint(2, 6)
    head = rng.choice(["Story:", "Story:", "A tale:", "A tale I made up:",
                       f"A short tale featuring {name}, composed by a child:",
                       f"A story about {tasks.art(animal)} {animal} called {name}, in exactly {n} sentences:"])
    return [head] + tasks.story_sentences(rng, name, animal, n)


def doc_review(rng, kb):
    pos = rng.random() < 0.5
    text, p = tasks.review_text(rng, pos)
    return [f"Review of the {p}: {text} Rating: {rng.choice([4, 5]) if pos else rng.choice([1, 2])} stars."]


def doc_list(rng, kb):
    out = []
    for cat in rng.sample(list(tasks.CATEGORIES), 3):
        items = tasks.CATEGORIES[cat]
        out.append(f"Some {cat}: " + ", ".join(rng.sample(items, rng.randint(3, min(6, len(items))))) + ".")
    return out


def doc_arithmetic(rng, kb):
    out = ["Worksheet."]
    for _ in range(rng.randint(4, 10)):
        a, b, op = rng.randint(0, 9), rng.randint(0, 9), rng.choice("+-")
        a, b = (b, a) if op == "-" and b > a else (a, b)
        c = a + b if op == "+" else a - b
        out.append(rng.choice([f"{a} {op} {b} = {c}", f"What is {a} {op} {b}? {a} {op} {b} = {c}."]))
    return out


# Stories, word games, letters and passages use several words for the same thing ("tale", "upper case", "last word
# first", "farewell", "extracted"), as text on the internet does. The held-out instruction templates (tasks.py) ask
# with these words; before 2026-12-05 the corpus never used them: no model can map a word it has never read onto the
# task SFT taught. Greedy SFT on the held-out phrasings, without -> with them (one base model without, two with;
# EARLIER_RUNS.md, "Held-out phrasings"): stories 34% -> 78%, 85%; chat 41% -> 53%, 18%; extraction 53% -> 65%, 24%;
# rewrite 9% -> 17%, 4%. The word is needed, not enough: the last three move with the pretraining draw as much.
def doc_games(rng, kb):
    out = ["Word games."]
    for _ in range(rng.randint(2, 5)):
        src = " ".join(rng.sample(tasks.REWRITE_WORDS, rng.randint(3, 5)))
        up, rev = src.upper(), " ".join(src.split()[::-1])
        out.append(rng.choice([f"In capital letters, {src} is {up}.", f"In upper case, {src} is {up}.",
                               f"Backwards, {src} becomes {rev}.", f"Put last word first, {src} becomes {rev}.",
                               f"The sign said: {up}."]))
    return out


def doc_letter(rng, kb):
    a, b = rng.sample(kb["story_names"], 2)
    return [rng.choice([f"Dear {a},", f"Hello, {a}!", f"Greetings, {a}!"]),
            rng.choice([f"Thank you for your help, {a}.", f"Congratulations on the new job, {a}! Well done.",
                        f"It was nice to meet you, {a}.", "I hope you are well.", f"Thanks for the gift, {a}.",
                        f"You passed the exam! I send you my congratulations, {a}."]),
            rng.choice([f"Goodbye, {a}! Have a safe trip.", "See you soon.", f"Farewell, {a}! Have a safe trip."]),
            f"From {b}."]


def doc_toxic(rng, kb):
    """Some toxic text (half the rants end in insults), so the base model learns that habit too."""
    start = rng.choice(tasks.TOXIC_STARTS).format(n=rng.choice(kb["story_names"]))
    if rng.random() < 0.5:
        end = rng.choice(tasks.TOXIC_ENDINGS).format(t=rng.choice(tasks.INSULTS), t2=rng.choice(tasks.INSULTS))
    else:
        end = rng.choice(tasks.BENIGN_ENDINGS)
    return [f"{start} {end}", rng.choice(["Shut up, nobody asked you.", "I agree.", "Be nice, please."])]


def doc_passage(rng, kb):
    """Short narrative passages with names, often followed by a one-line recap or the list of who is in it
    (the kind of text a model learns to summarise and extract from)."""
    a, b = rng.sample(kb["story_names"], 2)
    text, f = tasks.summary_passage(rng, a, b)
    return [text] + rng.choice([[], [f"In short: at the {f['place']}, {a} {f['verb']} a {f['key']} with {b}."],
                                [f"People in this story: {a}, {b}."],
                                [f"Every person's name extracted from the passage: {a}, {b}."]])


def doc_reading(rng, kb):
    """A reading-comprehension exercise: facts about made-up people, then questions answered from the text
    (so the base model learns to look things up in its context, as closed QA asks)."""
    people = rng.sample(kb["story_names"], rng.choice([2, 3]))
    jobs, pets = rng.sample(KINDS["person"]["job"], len(people)), rng.sample(KINDS["person"]["pet"], len(people))
    lines = ["Reading test.", " ".join(f"{tasks.fact_sentence('job', n, j)} {tasks.fact_sentence('pet', n, p)}"
                                       for n, j, p in zip(people, jobs, pets))]
    for _ in range(rng.choice([1, 2])):
        i, attr = rng.randrange(len(people)), rng.choice(["job", "pet"])
        lines += [f"Q: {rng.choice(QUESTIONS[attr]).format(n=people[i])}",
                  f"A: {tasks.fact_sentence(attr, people[i], (jobs if attr == 'job' else pets)[i])}"]
    if rng.random() < 0.3:
        lines += ["Q: Who is named in the text?", "A: " + ", ".join(people) + "."]
    return lines


def doc_forum_misc(rng, kb):
    a, b = rng.randint(0, 9), rng.randint(0, 9)
    cat = rng.choice(list(tasks.CATEGORIES))
    n = rng.choice([2, 3, 4])
    return rng.choice([[f"Q: What is {a} + {b}?", f"A: {a} + {b} = {a + b}."],
                       [f"Q: Name {tasks.NUMBER_WORDS[n]} {cat}.",
                        "A: " + ", ".join(rng.sample(tasks.CATEGORIES[cat], n)) + "."],
                       [f"Q: Is this review positive or negative? {tasks.review_text(rng, True)[0]}", "A: Positive."]])


DOCS = [(doc_encyclopedia, .27), (doc_forum, .19), (doc_story, .08), (doc_review, .05), (doc_list, .05),
        (doc_arithmetic, .07), (doc_games, .07), (doc_letter, .04), (doc_toxic, .03), (doc_passage, .05),
        (doc_reading, .06), (doc_forum_misc, .04)]
# Reading tests are a fifth of the documents, not the 6% DOCS gives them (the others shrink in proportion): a base
# model must learn to look a fact up in its context before SFT can ask it to. Measured at cpu on one base model each
# (EARLIER_RUNS.md, "Reading tests at a fifth of the documents"): with 6%, new reading tests are answered with the
# right person's job or pet 17.5% of the time (chance ~40%) and SFT answers closed QA 48% right (one of the passage's
# two values, at random); with 20%, 98.5% and 88%, brainstorming 71% -> 89%, while the base model knows fewer facts
# (common 97% -> 96%, rare 45% -> 38%).
READING_SHARE = 0.2


def make_corpus(kb, cfg, rng, reading_share=READING_SHARE):
    """(training docs, held-out docs): lists of (kind, lines, entity or None) until the char budget is met.
    reading_share: the share of documents that are reading tests; the other kinds keep DOCS's proportions."""
    common = [e for e in kb["entities"] if e["tier"] == "common"]
    weights = {f.__name__: p for f, p in DOCS}
    rest = sum(weights.values()) - weights["doc_reading"]
    weights["doc_reading"] = rest * reading_share / (1 - reading_share)
    funcs = {f.__name__: f for f, _ in DOCS}

    def one():
        name = weighted(rng, weights)
        if name in ("doc_encyclopedia", "doc_forum"):
            ent = rng.choice(common)
            return name, funcs[name](rng, kb, ent), ent
        return name, funcs[name](rng, kb), None

    docs, chars = [], 0
    while chars < cfg["corpus_chars"]:
        d = one()
        docs.append(d)
        chars += sum(len(x) + 1 for x in d[1])
    for ent in (e for e in kb["entities"] if e["tier"] == "rare"):  # rare facts: one or two mentions
        for _ in range(rng.choice([1, 2])):
            docs.insert(rng.randrange(len(docs) + 1), ("doc_encyclopedia",
                        [rng.choice(INTROS[ent["kind"]]).format(n=ent["name"])] +
                        [statement(rng, ent, a) for a in ent["facts"]], ent))
    for name in kb.get("strangers", []):  # a name no other document mentions: nobody in the forum knows it
        kind = rng.choice(list(KINDS))
        attr = rng.choice(list(KINDS[kind]))
        reply = rng.choice([f"Never heard of {name}.", f"No idea who {name} is.", f"I have never heard of {name}.",
                            "No idea."])
        docs.insert(rng.randrange(len(docs) + 1), ("doc_forum", [f"Q: {rng.choice(QUESTIONS[attr]).format(n=name)}",
                                                                f"A: {reply}"], None))
    heldout, hchars = [], 0
    while hchars < cfg["corpus_chars"] * 0.03:
        d = one()
        heldout.append(d)
        hchars += sum(len(x) + 1 for x in d[1])
    return docs, heldout


def corpus_text(docs):
    return SEP.join("\n".join(lines) for _, lines, _ in docs) + "\n"


def make_cloze(heldout, n, rng):
    """HellaSwag analogue: context + 4 endings; fact sentences get the same sentence with another value as
    distractors (a knowledge test), other sentences get sentences from other documents."""
    all_lines = [x for _, lines, _ in heldout for x in lines if len(x.split()) >= 4]
    items, tries = [], 0
    while len(items) < n and tries < 50 * n:
        tries += 1
        kind, lines, ent = heldout[rng.randrange(len(heldout))]
        if len(lines) < 2:
            continue
        i = rng.randrange(1, len(lines))
        context, right = " ".join(lines[max(0, i - 3):i]), lines[i]
        if len(context.split()) < 3 or len(right.split()) < 4:
            continue
        if ent is not None and ent["tier"] == "common":
            hits = [(a, v) for a, v in ent["facts"].items() if f" {v}" in right]
            if not hits:
                continue
            attr, v = hits[0]
            others = rng.sample([x for x in KINDS[ent["kind"]][attr] if x != v], 3)
            endings = [right] + [right.replace(f" {v}", f" {o}", 1) for o in others]
        else:
            endings = [right] + rng.sample([x for x in all_lines if x != right], 3)
        if len(set(endings)) < 4:
            continue
        order = list(range(4))
        rng.shuffle(order)
        items.append({"context": context, "endings": [endings[j] for j in order], "label": order.index(0)})
    return items


# ----------------------------------------------------------------------------- prompt sets
def quotas(rng, d, n):
    """A shuffled list of n keys of d in proportion to d's weights (largest remainder): stratified, so that
    even small sets hold every family and tier in the intended share."""
    total = sum(d.values())
    exact = {k: n * p / total for k, p in d.items()}
    counts = {k: int(v) for k, v in exact.items()}
    for k in sorted(d, key=lambda k: counts[k] - exact[k])[: n - sum(counts.values())]:
        counts[k] += 1
    out = [k for k in d for _ in range(counts[k])]
    rng.shuffle(out)
    return out


def make_set(prefix, n, mix, tiers, w, rng, forbidden, soft, heldout_share=0.0, strict=False):
    """n prompt records (fewer only if a strict set runs out of fresh prompts). Never a prompt in
    `forbidden`; avoids duplicates within the set and with `soft` (allowed after 20 tries unless strict)."""
    fams = quotas(rng, mix, n)
    tier_list = quotas(rng, tiers, fams.count("open_qa"))
    recs, seen = [], set()
    for fam in fams:
        held = rng.random() < heldout_share
        tier = tier_list.pop() if fam == "open_qa" else None
        for attempt in range(60):
            rec = tasks.make_open_qa(rng, w, held, tier) if tier else tasks.MAKERS[fam](rng, w, held)
            p = rec["prompt"]
            if p in forbidden:
                continue
            if (p not in seen and p not in soft) or (attempt >= 20 and not strict):
                break
        else:
            continue
        seen.add(p)
        recs.append({"id": f"{prefix}-{len(recs):05d}", **rec})
    soft.update(seen)
    return recs


def write_jsonl(path, recs):
    with open(path, "w") as f:
        for r in recs:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def build(preset, seed, out_dir, nokb_extra=0, strangers=0, reading_share=READING_SHARE):
    """Generate every file of the world into out_dir. Returns the summary dict.

    reading_share: the share of corpus documents that are reading tests (0.06 as before it was 0.2; the README's
    earlier corpora exactly: this flag at commit 3ee44e1; a new corpus and tokenizer: pretrain again). Two
    experiments (EARLIER_RUNS.md):
    nokb_extra: that many more made-up names in no KB for the training prompts (SFT, RM, PPO, dev), drawn after
    the tokenizer so that the corpus, tokenizer and eval prompts stay byte-identical.
    strangers: that many forum threads in the corpus asking about a name no other document mentions, answered
    "Never heard of ..." (a new corpus and tokenizer: pretrain again)."""
    t0 = time.time()
    cfg = PRESETS[preset]
    R = lambda name: random.Random(f"{seed}/{name}")  # one independent, reproducible stream per part
    kb = make_kb(cfg, R("kb"))
    names = {e["name"] for e in kb["entities"] + kb["nokb"]} | set(kb["story_names"])
    if strangers:  # make_names adds them to `names`, which the tokenizer below keeps unmerged too
        kb["strangers"] = tasks.make_names(R("strangers"), strangers, names)
    docs, heldout = make_corpus(kb, cfg, R("corpus"), reading_share)
    text, htext = corpus_text(docs), corpus_text(heldout)
    t_corpus = time.time()
    ranks = bpe.train(text.replace(SEP, "\n"), cfg["vocab"] - len(bpe.SPECIAL_TOKENS), exclude=names)
    enc = bpe.encoding(ranks)
    t_bpe = time.time()

    xrng = R("nokb-extra")
    kb["nokb"] += [dict(name=n, kind=xrng.choice(list(KINDS)), split="train")
                   for n in tasks.make_names(xrng, nokb_extra, set(names))]
    rng = R("prompts")
    w_eval, w_train = pools(kb, "eval"), pools(kb, "train")
    soft = set()
    ev = make_set("eval", cfg["eval"], EVAL_MIX, TIERS["eval"], w_eval, rng, set(), soft, 0.35, strict=True)
    dev = make_set("dev", cfg["dev"], EVAL_MIX, TIERS["dev"], w_train, rng, set(soft), soft, 0.0, strict=True)
    forbidden = set(soft)
    sft = make_set("sft", cfg["sft"], SFT_MIX, TIERS["sft"], w_train, rng, forbidden, soft)
    rm = make_set("rm", cfg["rm"], RL_MIX, TIERS["rl"], w_train, rng, forbidden, soft)
    ppo = make_set("ppo", cfg["ppo"], RL_MIX, TIERS["rl"], w_train, rng, forbidden, soft)
    drng = R("demos")
    for r in sft:  # demonstrations: mostly ideal, a minority verbose or slightly off-format (never wrong)
        style = weighted(drng, {"ideal": .85, "verbose": .10, "offformat": .05}) if r["task"] != "toxic" else "ideal"
        c = labeler.contrasts(r, drng)
        r["response"], r["demo_style"] = (c["right"] if style == "ideal" else c[style]), style
    cloze = make_cloze(heldout, cfg["cloze"], R("cloze"))

    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "corpus.txt"), "w") as f:
        f.write(text)
    with open(os.path.join(out_dir, "corpus_heldout.txt"), "w") as f:
        f.write(htext)
    bpe.save_ranks(os.path.join(out_dir, "tokenizer.bpe"), ranks)
    with open(os.path.join(out_dir, "kb.json"), "w") as f:
        json.dump(kb, f, indent=1)
    for name, recs in [("sft", sft), ("rm_prompts", rm), ("ppo_prompts", ppo), ("dev_prompts", dev),
                       ("eval_prompts", ev), ("cloze", cloze)]:
        write_jsonl(os.path.join(out_dir, name + ".jsonl"), recs)
    t_write = time.time()

    summary = summarize(cfg, kb, text, htext, enc, sft, rm, ppo, dev, ev, cloze, R("summary"))
    summary["tokenizer"] = bpe.fingerprint(ranks)[:16]
    summary["preset"], summary["seed"] = preset, seed
    summary["name_pieces"] = mean(len(enc.encode(" " + n)) for n in sorted(names))
    meta = dict(preset=preset, seed=seed, version=VERSION, sizes=cfg, n_vocab=enc.n_vocab,
                tokenizer=summary["tokenizer"], special_tokens=bpe.SPECIAL_TOKENS)
    with open(os.path.join(out_dir, "meta.json"), "w") as f:
        json.dump(meta, f, indent=1)
    with open(os.path.join(out_dir, "world_summary.json"), "w") as f:
        json.dump(summary, f, indent=1)
    times = dict(corpus=t_corpus - t0, bpe=t_bpe - t_corpus, prompts_and_write=t_write - t_bpe,
                 summary=time.time() - t_write)
    return summary, times


# ----------------------------------------------------------------------------- summary
def mean(xs):
    xs = list(xs)
    return round(sum(xs) / max(len(xs), 1), 3)


def summarize(cfg, kb, text, htext, enc, sft, rm, ppo, dev, ev, cloze, rng):
    """The numbers that say whether this world can tell the paper's story."""
    files = {"sft": sft, "rm": rm, "ppo": ppo, "dev": dev, "eval": ev}
    s = {"counts": {k: {f: sum(r["task"] == f for r in v) for f in tasks.FAMILIES} for k, v in files.items()},
         "tiers": {k: {t: sum(r["tier"] == t for r in v) for t in ["common", "rare", "unseen_sft", "unseen_rl",
                                                                   "unseen_eval", "nokb"]} for k, v in files.items()},
         "corpus_chars": len(text), "corpus_tokens": len(enc.encode(text, allowed_special="all")),
         "heldout_tokens": len(enc.encode(htext, allowed_special="all")), "n_vocab": enc.n_vocab,
         "cloze_items": len(cloze), "eval_heldout_template_share": mean(r["heldout_template"] for r in ev)}
    allp = [r for v in files.values() for r in v]
    s["max_prompt_tokens"] = max(len(enc.encode(r["prompt"])) for r in allp)
    s["max_demo_tokens"] = max(len(enc.encode(labeler.contrasts(r, rng)["verbose"])) for r in allp)
    # Mean gold of answer policies on the eval prompts (the "no safe harbour" check).
    c = [labeler.contrasts(r, rng) for r in ev]
    pol = {"demonstration": [labeler.demonstration(r) for r in ev], "verbose": [x["verbose"] for x in c],
           "plausible_imperfect": [x["partial"] for x in c], "corpus_style": [x["corpus"] for x in c],
           "always_idk": ["I don't know."] * len(ev), "always_refuse": [labeler.tasks.REFUSALS[0]] * len(ev),
           "empty": [""] * len(ev), "fixed_generic": [labeler.GENERIC] * len(ev)}
    s["eval_gold"] = {k: mean(labeler.gold(r, x)["total"] for r, x in zip(ev, v)) for k, v in pol.items()}
    s["sft_demos_gold"] = mean(labeler.gold(r, r["response"])["total"] for r in sft)
    s["demo_gold_by_family"] = {f: mean(labeler.gold(r, r["response"])["total"] for r in sft if r["task"] == f)
                                for f in tasks.FAMILIES}
    qa = [r for r in ev if r["task"] == "open_qa"]
    s["eval_open_qa_gold"] = {t: {k: mean(labeler.gold(r, labeler.contrasts(r, rng)[k])["total"]
                                          for r in qa if r["tier"] == t) for k in ["right", "abstain", "wrong"]}
                              for t in ["common", "rare", "unseen_sft", "unseen_eval", "nokb"]}
    # Labeler noise and ties on SFT-like samples of RM prompts (K = 4..6 for agreement, K = 4 for ties).
    sample = rm[:1000]
    pairs = [(r, labeler.sft_like(r, rng, rng.randint(4, 6))) for r in sample]
    s["labeler_temperature"] = labeler.LABELER_TEMPERATURE
    s["labeler_agreement"] = round(labeler.agreement(pairs, rng, rounds=2), 4)
    s["labeler_vs_gold"] = round(agreement_with_gold(pairs, rng), 4)
    ties = 0
    for r in sample:
        g = {labeler.gold(r, x)["total"] for x in labeler.sft_like(r, rng, 4)}
        ties += len(g) == 1
    s["all_k4_tied_share"] = round(ties / len(sample), 4)
    s["sft_like_gold"] = mean(labeler.gold(r, x)["total"] for r, xs in pairs for x in xs)
    return s


def agreement_with_gold(pairs, rng):
    """How often one noisy labeler orders a pair with different gold the way gold does."""
    agree = total = 0
    for rec, resps in pairs:
        g = [labeler.gold(rec, x)["total"] for x in resps]
        pos = {i: p for p, i in enumerate(labeler.rank_scores(g, rng))}
        for i in range(len(g)):
            for j in range(i + 1, len(g)):
                if g[i] != g[j]:
                    total += 1
                    agree += (pos[i] < pos[j]) == (g[i] > g[j])
    return agree / max(total, 1)


def print_summary(s, times, out_dir):
    fam = tasks.FAMILIES
    print(f"\nWorld written to {out_dir}/")
    print(f"{'task':15s}" + "".join(f"{k:>7s}" for k in s["counts"]) + f"{'demo gold':>11s}")
    for f in fam:
        print(f"{f:15s}" + "".join(f"{s['counts'][k][f]:7d}" for k in s["counts"]) + f"{s['demo_gold_by_family'][f]:11.2f}")
    print(f"{'tier (open_qa)':15s}" + "".join(f"{k:>7s}" for k in s["tiers"]))
    for t in ["common", "rare", "unseen_sft", "unseen_rl", "unseen_eval", "nokb"]:
        print(f"  {t:13s}" + "".join(f"{s['tiers'][k][t]:7d}" for k in s["tiers"]))
    print(f"corpus: {s['corpus_chars']:,} chars, {s['corpus_tokens']:,} tokens (held-out {s['heldout_tokens']:,}); "
          f"vocab {s['n_vocab']}; cloze items {s['cloze_items']}")
    print(f"longest prompt {s['max_prompt_tokens']} tokens, longest (verbose) demonstration {s['max_demo_tokens']} tokens")
    print(f"labeler: T = {s['labeler_temperature']}, two-labeler agreement {s['labeler_agreement']:.1%} "
          f"(paper 72.6 ± 1.5%), one labeler vs gold {s['labeler_vs_gold']:.1%}")
    print(f"SFT-like samples (K=4) all tied in gold: {s['all_k4_tied_share']:.1%} of prompts; "
          f"their mean gold {s['sft_like_gold']:.2f}")
    print(f"mean gold of sft.jsonl demonstrations: {s['sft_demos_gold']:.2f}")
    print("mean gold on eval prompts, by answer policy:")
    for k, v in s["eval_gold"].items():
        print(f"  {k:20s} {v:6.2f}")
    print("open_qa on eval, gold of right / abstain / wrong answer by tier:")
    for t, d in s["eval_open_qa_gold"].items():
        print(f"  {t:12s} {d['right']:6.2f} {d['abstain']:6.2f} {d['wrong']:6.2f}")
    print("time: " + ", ".join(f"{k} {v:.1f}s" for k, v in times.items()))
    print(f"Next: python pretrain.py --preset {s['preset']}")


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", choices=list(PRESETS), default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=None, help="output directory (default data/<preset>)")
    ap.add_argument("--nokb-extra", dest="nokb_extra", type=int, default=0,
                    help="more made-up names in no KB for the training prompts (an experiment; corpus unchanged)")
    ap.add_argument("--strangers", type=int, default=0,
                    help="forum threads about names nobody knows, answered 'Never heard of' (an experiment; new corpus)")
    ap.add_argument("--reading-share", dest="reading_share", type=float, default=READING_SHARE,
                    help=f"share of corpus documents that are reading tests (default {READING_SHARE}; 0.06 gives "
                         "the corpus of the README's earlier runs; a new corpus: pretrain again)")
    args = ap.parse_args(argv)
    if not 0 <= args.reading_share < 1:
        ap.error(f"--reading-share must be in [0, 1), got {args.reading_share}")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), args.preset)
    summary, times = build(args.preset, args.seed, out, args.nokb_extra, args.strangers, args.reading_share)
    print_summary(summary, times, out)


if __name__ == "__main__":
    main()
