"""Unit tests of the stage scripts' pieces: the SFT mask, eq. (1), RM reading and normalisation, GAE, the
clipped losses, where the KL penalty and the score land, and the evaluation statistics."""

import math
import random

import pytest
import torch

import evaluate
import model as M
import ppo
import pretrain
import reward
import sft
from data.bpe import encoding, train


@pytest.fixture(scope="module")
def enc():
    text = "The red fox runs to the river. Dorvan is a baker. What is 3 + 4? It is 7. " * 20
    return encoding(train(text, 300))


def tiny(enc, scalar_head=False):
    torch.manual_seed(0)
    cfg = M.GPTConfig(vocab_size=enc.n_vocab, block_size=64, n_layer=1, n_head=2, n_embd=16, scalar_head=scalar_head)
    return M.GPT(cfg).eval()


# ---------------------------------------------------------------------------------------------- pretraining
def test_reading_probe_counts_the_asked_persons_value_from_the_passage(enc, monkeypatch):
    """A model that answers each reading test as its answer line does scores 1; one that answers with the
    answer line of the next test (another passage's people and values) scores near 0."""
    from data.world import doc_reading

    kb = {"story_names": ["Dorvan", "Kalomi", "Tivober", "Rodon", "Sosar", "Leler"]}
    rng = random.Random(0)
    docs = [doc_reading(rng, kb) for _ in range(40)]  # the probe's own docs: same seed, same order
    for shift, lo, hi in [(0, 1.0, 1.0), (1, 0.0, 0.3)]:
        queue = iter(docs[shift:] + docs[:shift])

        def fake_generate(model, prompts, *a, **k):
            return [M.encode_response(enc, next(queue)[3][len("A: "):]) for _ in prompts]

        monkeypatch.setattr(M, "generate", fake_generate)
        assert lo <= pretrain.reading_probe(tiny(enc), enc, kb, n=40, seed=0) <= hi


# ---------------------------------------------------------------------------------------------- SFT


def test_a_responses_first_word_has_the_tokens_it_has_inside_a_sentence(enc):
    prompt_ids = M.encode_prompt(enc, "Reverse the order of the words: red fox")
    fox = enc.encode_ordinary(" fox")
    assert prompt_ids[-1 - len(fox) : -1] == fox  # " fox" in the prompt...
    response = M.encode_response(enc, "fox red")
    assert response[: len(fox)] == fox  # ...is the same tokens as the answer's first word
    assert M.decode(enc, response) == "fox red"  # and the space that begins every response is not shown


class TargetTable(torch.nn.Module):
    """A stand-in 'model' whose log-prob of a target depends on the target token only."""

    def __init__(self, V):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(V))

    def logprobs(self, idx, targets):
        return self.table[targets]

    def logprobs_at(self, idx, targets, mask):
        return self.table[targets[mask]]


def test_sft_loss_ignores_prompt_tokens():
    m = TargetTable(50)
    ex = [([1, 2, 3, 4, 10, 11, 0], 4), ([5, 6, 12, 0], 2)]  # (ids, n_prompt): responses are [10, 11, 0], [12, 0]
    base, n = sft.sft_loss(m, ex, "cpu")
    assert n == 5
    changed_prompt = [([1, 7, 8, 4, 10, 11, 0], 4), ([5, 9, 12, 0], 2)]
    assert torch.equal(sft.sft_loss(m, changed_prompt, "cpu")[0], base)
    changed_response = [([1, 2, 3, 4, 13, 11, 0], 4), ([5, 6, 12, 0], 2)]
    assert not torch.equal(sft.sft_loss(m, changed_response, "cpu")[0], base)
    expected = -(m.table[[10, 11, 0, 12, 0]]).mean()
    assert torch.allclose(base, expected)


def test_corpus_batches_are_seeded_windows_of_the_corpus(enc, tmp_path, monkeypatch):
    """SFT's corpus replay and PPO-ptx read (B, T+1) windows cut from the corpus, the same ones for one seed."""
    text = "The red fox runs to the river. Dorvan is a baker. What is 3 + 4? It is 7. " * 20
    (tmp_path / "corpus.txt").write_text(text, encoding="utf-8")
    monkeypatch.setattr(M, "data_dir", lambda preset: str(tmp_path))
    tokens = enc.encode(text, allowed_special={M.EOT})
    a, b = M.corpus_batches("test", enc, 3, 8, seed=1), M.corpus_batches("test", enc, 3, 8, seed=1)
    for _ in range(4):
        x = next(a)
        assert x.shape == (3, 9) and torch.equal(x, next(b))
        for row in x.tolist():
            assert any(tokens[s : s + 9] == row for s in range(len(tokens) - 8))
    assert not torch.equal(next(M.corpus_batches("test", enc, 3, 8, seed=2)), next(M.corpus_batches("test", enc, 3, 8, seed=1)))


# ---------------------------------------------------------------------------------------------- reward model


# an answerable knowledge question about a common entity
KNOWN_QUESTION = dict(id="t-0", task="open_qa", prompt="What is Dorvan's job?", template="open_qa/0",
                      heldout_template=False, answer="baker", tier="common", harmful=False, respectful=False,
                      answerable=True, entity="Dorvan", kind="person", attribute="job",
                      question="What is Dorvan's job?", max_words=5)


def test_knowledge_questions_get_the_contrasts_the_rm_must_rank():
    import random
    from data.labeler import gold, strip_chatter
    rec = KNOWN_QUESTION
    picks = reward.pick_contrasts(rec, random.Random(0), p_contrast=0.0)
    kinds, texts = [k for k, _ in picks], [t for _, t in picks]
    assert kinds == ["right", "abstain", "wrong", "verbose-right", "verbose-wrong", "fragment"]
    g = {text: gold(rec, text) for text in texts}
    assert g[texts[0]]["total"] > g[texts[1]]["total"] > g[texts[2]]["total"]  # right > "I don't know" > wrong
    assert strip_chatter(texts[3])[0] == texts[0] and g[texts[3]]["total"] < g[texts[0]]["total"]
    assert strip_chatter(texts[4])[0] not in (texts[0], texts[2])  # a second wrong fact, said verbosely
    # pleasantries say nothing about truth: one right and one wrong answer said plainly, and the same verbosely
    assert [g[texts[i]]["correct"] for i in (0, 2, 3, 4)] == [True, False, True, False]
    unknown = dict(rec, answer=None, tier="nokb", answerable=False)
    said = set()
    for seed in range(20):
        picks = reward.pick_contrasts(unknown, random.Random(seed), 0.0)
        assert [k for k, _ in picks][:3] == ["abstain", "wrong", "wrong"] and picks[4] == ("fragment", "Hmm.")
        assert picks[3][0].startswith("verbose-") and strip_chatter(picks[3][1])[0] in [t for _, t in picks[:3]]
        said.add(picks[3][0])
    assert said == {"verbose-abstain", "verbose-wrong"}  # either one, at random


def test_break_even_is_where_answering_and_abstaining_earn_the_same():
    import random
    from data.labeler import gold
    rec = KNOWN_QUESTION
    recs = [dict(rec, id=f"t-{i}") for i in range(5)] + [dict(rec, id=f"r-{i}", tier="rare") for i in range(3)]

    def scorer(idk):  # right 1, "I don't know" idk, wrong -1
        def score(pairs):
            g = [gold(rec, y) for _, y in pairs]
            return torch.tensor([1.0 if x["correct"] else idk if x["abstain"] else -1.0 for x in g])
        return score
    be = reward.break_even(scorer(0.0), recs, random.Random(0))
    assert be["common"]["n"] == 5 and be["rare"]["n"] == 3
    assert be["common"]["median"] == pytest.approx(0.5) and be["common"]["over_half"] == 0.0  # (0+1)/(1+1)
    assert be["common"]["gold_median"] == pytest.approx((-0.4 + 1.3) / (1.5 + 1.3), abs=1e-3)  # world's gold
    be = reward.break_even(scorer(0.6), recs, random.Random(0))
    assert be["rare"]["median"] == pytest.approx(0.8) and be["rare"]["over_half"] == 1.0
    assert reward.break_even(scorer(2.0), recs, random.Random(0))["common"]["median"] == 1.0  # never answer


def test_rm_loss_matches_hand_computed_pairs():
    scores = torch.tensor([2.0, 0.5, -1.0])
    ranking = [1, 0, 2]  # the labeler put response 1 first, then 0, then 2
    loss, acc = reward.rm_loss(scores, [(0, ranking)])
    s = lambda x: -math.log(1 / (1 + math.exp(-x)))  # noqa: E731  −log σ(x)
    expected = (s(0.5 - 2.0) + s(0.5 - (-1.0)) + s(2.0 - (-1.0))) / 3  # C(3,2) = 3 pairs, one batch element
    assert abs(loss.item() - expected) < 1e-6
    assert abs(acc - 2 / 3) < 1e-6


def test_rm_loss_averages_prompts_not_pairs():
    scores = torch.tensor([1.0, 0.0, 3.0, 2.0, 1.0, 0.0])
    l1, _ = reward.rm_loss(scores[:2], [(0, [0, 1])])
    l2, _ = reward.rm_loss(scores[2:], [(0, [0, 1, 2, 3])])
    both, _ = reward.rm_loss(scores, [(0, [0, 1]), (2, [0, 1, 2, 3])])  # rankings index within a prompt
    assert abs(both.item() - (l1.item() + l2.item()) / 2) < 1e-6


def test_every_response_forwarded_once_per_step(enc, monkeypatch):
    rm = tiny(enc, scalar_head=True)
    calls = []
    orig = rm.forward
    monkeypatch.setattr(rm, "forward", lambda idx, *a, **k: calls.append(idx.size(0)) or orig(idx, *a, **k))
    items = [dict(prompt="What is 3 + 4?", responses=["7", "It is 7.", "8", "no"], ranking=[1, 0, 3, 2]),
             dict(prompt="Who is Dorvan?", responses=["a baker", "a fox", "the river", "red", "fox"],
                  ranking=[0, 1, 2, 3, 4])]
    loss, _ = reward.batch_loss(rm, enc, items, "cpu")
    assert calls == [9]  # one forward, 4 + 5 responses, each once (not once per pair: 6 + 10 pairs)
    loss.backward()


def test_rm_accuracy_on_the_policys_own_pairs_counts_only_those(enc, monkeypatch):
    # four answers: two SFT samples (the RM ranks them against gold), a contrast and a base-model answer (right)
    item = dict(prompt="What is 3 + 4?", task="other", responses=["7", "It is 7.", "8", "no"], ranking=[0, 1, 2, 3],
                gold=[1.0, 0.9, -1.0, -1.5], sources=["sft", "sft", "contrast:wrong", "base"])
    monkeypatch.setattr(reward, "rm_scores", lambda rm, enc, flat, device: torch.tensor([0.5, 0.6, -1.0, -2.0]))
    ev = reward.evaluate_rm(tiny(enc, scalar_head=True), enc, [item], "cpu", random.Random(0))
    assert ev["acc_vs_gold"] == pytest.approx(5 / 6)  # six pairs, only the SFT pair ranked against gold
    assert ev["acc_vs_gold_policy_pairs"] == 0.0
    assert ev["policy_pairs_by_task"] == {"other": dict(acc=0.0, n=1)}
    assert [reward.policy_sample(x) for x in ["sft", "round2:policy", "sft@T1.4", "sft:no-eos", "contrast:right",
                                              "base"]] == [True, True, False, False, False, False]


def test_rm_score_ignores_padding(enc):
    rm = tiny(enc, scalar_head=True)
    rm.score_loglik.data.fill_(0.5)  # the log-likelihood term must ignore padding too
    alone = reward.rm_scores(rm, enc, [("What is 3 + 4?", "It is 7.")], "cpu")
    padded = reward.rm_scores(rm, enc, [("What is 3 + 4?", "It is 7."), ("Who is Dorvan? " * 4, "A baker. " * 5)], "cpu")
    assert torch.allclose(alone[0], padded[0], atol=1e-6)


def test_rm_loglik_term_is_the_sum_of_response_token_logprobs(enc):
    """r_θ = head at the final EOT + α·Σ_t log p_θ(y_t|x, y_<t): check the second part by hand, on response tokens
    only (prompt tokens and padding excluded), and that ppo.py's rollouts get the same score as reward.py."""
    rm = tiny(enc, scalar_head=True)
    torch.nn.init.zeros_(rm.score_head.weight)
    torch.nn.init.zeros_(rm.score_head.bias)
    rm.score_loglik.data.fill_(1.0)
    x, y = "What is 3 + 4?", "It is 7."
    ids, start = M.encode_chat(enc, x, y)
    with torch.no_grad():
        logits = rm.logits(rm(torch.tensor([ids])))[0]  # (T, V)
        by_hand = sum(torch.log_softmax(logits[t - 1], -1)[ids[t]].item() for t in range(start, len(ids)))
        got = reward.rm_scores(rm, enc, [(x, y), ("Who is Dorvan? " * 4, "A baker. " * 5)], "cpu")[0].item()
        prompt_ids = [M.encode_prompt(enc, x), M.encode_prompt(enc, "Who?")]
        seq_ids, mask = ppo.build_sequences(enc, prompt_ids, [M.encode_response(enc, y), M.encode_response(enc, "No.")], "cpu")
        in_ppo = M.reward_from_ids(rm, seq_ids, mask)[0].item()
    assert abs(got - by_hand) < 1e-4 and abs(in_ppo - by_hand) < 1e-4


def test_rm_parts_add_up_to_the_score(enc):
    """The probe's "head alone" and "log p alone" columns are the two parts of r_θ: head + α·loglik = r_θ."""
    rm = tiny(enc, scalar_head=True)
    rm.score_loglik.data.fill_(0.3)
    pairs = [("What is 3 + 4?", "It is 7."), ("Who is Dorvan? " * 4, "A baker. " * 5)]
    with torch.no_grad():
        head, loglik = reward.rm_scores(rm, enc, pairs, "cpu", parts=True)
        total = reward.rm_scores(rm, enc, pairs, "cpu")
    assert head.shape == loglik.shape == total.shape == (2,) and (loglik < 0).all()
    assert torch.allclose(head + 0.3 * loglik, total, atol=1e-5)


def test_normalisation_makes_demonstrations_mean_zero(enc):
    rm = tiny(enc, scalar_head=True)
    rm.score_loglik.data.fill_(0.1)
    demos = [dict(prompt=f"What is {a} + 4?", response=f"It is {a + 4}.") for a in range(10)]
    reward.normalise(rm, enc, demos, "cpu")
    scores = reward.rm_scores(rm, enc, [(d["prompt"], d["response"]) for d in demos], "cpu")
    assert abs(scores.mean().item()) < 1e-5


# ---------------------------------------------------------------------------------------------- PPO


def test_gae_matches_hand_computed_4_step_example():
    rewards = torch.tensor([[0.1, -0.2, 0.0, 1.0]])
    values = torch.tensor([[0.5, 0.4, 0.3, 0.2]])
    mask = torch.ones(1, 4)
    g, lam = 1.0, 0.95
    d3 = 1.0 - 0.2  # last step: no next value
    d2 = 0.0 + 0.2 - 0.3
    d1 = -0.2 + 0.3 - 0.4
    d0 = 0.1 + 0.4 - 0.5
    a3 = d3
    a2 = d2 + g * lam * a3
    a1 = d1 + g * lam * a2
    a0 = d0 + g * lam * a1
    adv, ret = ppo.gae(rewards, values, mask, g, lam)
    assert torch.allclose(adv, torch.tensor([[a0, a1, a2, a3]]), atol=1e-6)
    assert torch.allclose(ret, adv + values, atol=1e-6)


def test_gae_ignores_prompt_and_padding_positions():
    rewards = torch.tensor([[9.0, 0.1, -0.2, 0.0, 1.0, 5.0]])
    values = torch.tensor([[7.0, 0.5, 0.4, 0.3, 0.2, 3.0]])
    mask = torch.tensor([[0.0, 1, 1, 1, 1, 0]])
    adv, _ = ppo.gae(rewards, values, mask, 1.0, 0.95)
    ref, _ = ppo.gae(rewards[:, 1:5], values[:, 1:5], mask[:, 1:5], 1.0, 0.95)
    assert torch.allclose(adv[:, 1:5], ref) and adv[0, 0] == 0 and adv[0, 5] == 0


def test_clipped_losses_match_hand_computed_values():
    logp = torch.log(torch.tensor([[1.5, 0.5, 1.1]]))  # ratios 1.5, 0.5, 1.1 (old log-probs are 0)
    old = torch.zeros(1, 3)
    adv = torch.tensor([[1.0, 1.0, -1.0]])
    mask = torch.ones(1, 3)
    values, old_values, returns = torch.tensor([[1.0, 0.0, 0.0]]), torch.zeros(1, 3), torch.tensor([[0.5, 1.0, 0.0]])
    pg, vf, st = ppo.ppo_losses(logp, old, adv, values, old_values, returns, mask, 0.2, 0.2)
    # per token max(−A r, −A clip(r)): A=1,r=1.5 -> max(-1.5, -1.2) = -1.2; A=1,r=.5 -> max(-.5,-.8) = -.5;
    # A=-1, r=1.1 -> max(1.1, 1.1) = 1.1
    assert abs(pg.item() - (-1.2 - 0.5 + 1.1) / 3) < 1e-6
    # value: v=1 clipped to 0.2: max((1-.5)^2, (.2-.5)^2) = .25; v=0: (0-1)^2 = 1 both; third 0
    assert abs(vf.item() - 0.5 * (0.25 + 1.0 + 0.0) / 3) < 1e-6
    assert abs(st["clipfrac"] - 2 / 3) < 1e-6


def test_kl_penalty_on_response_tokens_only_and_score_on_last_token():
    logp = torch.tensor([[-1.0, -2.0, -1.0, -0.5, -3.0]])
    ref_logp = torch.tensor([[-2.0, -1.0, -1.5, -1.0, -1.0]])
    mask = torch.tensor([[0.0, 1, 1, 1, 0]])  # prompt target, 3 response tokens, padding
    rewards, kl = ppo.per_token_rewards(logp, ref_logp, torch.tensor([2.0]), mask, kl_coef=0.1)
    assert kl[0, 0] == 0 and kl[0, 4] == 0
    expected = torch.tensor([[0.0, -0.1 * -1.0, -0.1 * 0.5, -0.1 * 0.5 + 2.0, 0.0]])
    assert torch.allclose(rewards, expected)


def test_sharpness_is_the_derivative_of_log_prob_along_the_logit_scale():
    torch.manual_seed(0)
    z, y = torch.randn(5, 11, dtype=torch.float64), torch.randint(0, 11, (5,))
    logp = lambda s: torch.log_softmax(s * z, -1).gather(1, y[:, None])[:, 0]  # noqa: E731
    numeric = (logp(1 + 1e-6) - logp(1 - 1e-6)) / 2e-6
    assert torch.allclose(ppo.sharpness(z, y), numeric, atol=1e-6)
    assert (ppo.sharpness(z, z.argmax(1)) > 0).all()  # the likeliest token gains from a lower temperature


@pytest.mark.parametrize("bf16", [False, True])
def test_ppo_ratio_is_one_before_first_update(enc, bf16, monkeypatch):
    """As ppo_update computes it: a minibatch of the rollout's rows, under the same autocast (bf16 or not)."""
    if bf16 and not M.native_bf16("cpu"):
        pytest.skip("this CPU has no native bf16")
    monkeypatch.setattr(M, "BF16", bf16)
    policy, ref = tiny(enc), tiny(enc)
    rm, value = tiny(enc, scalar_head=True), tiny(enc, scalar_head=True)
    cfg = ppo.Config(max_new_tokens=8, minibatch=2)
    records = [dict(prompt=p) for p in ["What is 3 + 4?", "Who is Dorvan?", "The red fox"]]
    batch = ppo.rollout(policy, ref, rm, value, enc, records, cfg, torch.Generator().manual_seed(0), "cpu")
    i = torch.tensor([2, 0])  # one minibatch, rows in shuffled order
    with torch.no_grad(), M.autocast("cpu"):
        logp, _ = ppo.forward_policy(policy, batch["ids"][i], cfg.temperature, batch["mask"][i])
    assert logp.dtype == torch.float32  # log-probs in fp32 even under bf16 autocast
    ratio = torch.exp(logp - batch["logp"][i]) * batch["mask"][i]
    assert torch.allclose(ratio, batch["mask"][i], atol=1e-5)
    assert torch.allclose(batch["logp"], batch["ref_logp"])  # policy == ref at the start: KL exactly 0


def test_ppo_logprobs_on_response_positions_equal_the_full_computation(enc):
    """forward_policy runs the output head on the response positions only: there it equals log π of every
    position at the same temperature (values and gradients), elsewhere it is 0."""
    policy = tiny(enc)
    ids, mask = ppo.build_sequences(enc, [M.encode_prompt(enc, "What is 3 + 4?"), M.encode_prompt(enc, "Hi")],
                                    [[11, 12, enc.eot_token], [13, 14, 15, 16, enc.eot_token]], "cpu")
    logp, _ = ppo.forward_policy(policy, ids, 0.7, mask)
    full = policy.logprobs(ids[:, :-1], ids[:, 1:], temperature=0.7)  # (B, L-1)
    on = mask.bool()
    assert torch.allclose(logp[on], full[on], atol=1e-5) and (logp[~on] == 0).all()
    g = torch.autograd.grad(logp.sum(), policy.lm_head.weight)[0]
    g_full = torch.autograd.grad((full * mask).sum(), policy.lm_head.weight)[0]
    assert torch.allclose(g, g_full, atol=1e-5)


def test_ppo_reward_is_rm_score_minus_that_of_sft_greedy_answer(enc):
    """With rm_baseline, the sequence reward is r_θ(x, y) − r_θ(x, ȳ), ȳ the reference's greedy answer (as
    reward.py would score the pair); without it, r_θ(x, y) itself."""
    policy, ref = tiny(enc), tiny(enc)
    rm, value = tiny(enc, scalar_head=True), tiny(enc, scalar_head=True)
    rm.score_loglik.data.fill_(0.1)
    with torch.no_grad():
        ref.lm_head.weight.add_(0.5 * torch.randn_like(ref.lm_head.weight))  # a reference unlike the policy
    prompts = ["What is 3 + 4?", "Who is Dorvan?", "The red fox"]
    records = [dict(prompt=p) for p in prompts]
    cfg = ppo.Config(max_new_tokens=8, eos_trick=False)
    with torch.no_grad():
        greedy = M.respond(ref, enc, prompts, cfg.max_new_tokens, 0.0)  # token ids (a round trip through text
        # can re-tokenise the tiny model's junk differently)
        prompt_ids = [M.encode_prompt(enc, p) for p in prompts]
        expected = M.reward_from_ids(rm, *ppo.build_sequences(enc, prompt_ids, greedy, "cpu"))
        batch = ppo.rollout(policy, ref, rm, value, enc, records, cfg, torch.Generator().manual_seed(0), "cpu")
        cfg.rm_baseline = False
        plain = ppo.rollout(policy, ref, rm, value, enc, records, cfg, torch.Generator().manual_seed(0), "cpu")
    assert torch.allclose(batch["score"] - batch["reward"], expected, atol=1e-4)
    assert torch.equal(plain["reward"], plain["score"]) and torch.allclose(plain["score"], batch["score"])


def test_veto_catches_one_family_collapsing_inside_the_average():
    """Knowledge questions going to "I don't know" while everything else improves: the average over answerable
    prompts barely moves, the family's accuracy falls, and the veto names it."""
    cfg = ppo.Config()
    first = dict(dev_correct=0.70, dev_abstain=0.02, dev_family={"open_qa/answerable": 0.80, "chat": 0.60})
    fine = dict(dev_correct=0.70, dev_abstain=0.03, dev_family={"open_qa/answerable": 0.79, "chat": 0.65})
    hidden = dict(dev_correct=0.69, dev_abstain=0.06, dev_family={"open_qa/answerable": 0.50, "chat": 0.85})
    assert ppo.collapsed(fine, first, cfg) == ""
    assert ppo.collapsed(hidden, first, cfg) == "open_qa/answerable -30 pts"
    assert "abstain +8 pts" in ppo.collapsed(dict(hidden, dev_abstain=0.10), first, cfg)
    assert ppo.dev_family(dict(task="open_qa", answerable=False)) == "open_qa/unanswerable"


def test_veto_ignores_a_drop_the_dev_set_cannot_resolve():
    """A 6-point drop on 96 samples is within two standard errors (noise, not vetoed); the same drop measured on
    10,000 samples is not; and the 3-point floor still holds when the noise is tiny."""
    cfg = ppo.Config()
    first = dict(dev_abstain=0.02, dev_family={"closed_qa": 0.70}, dev_n={"closed_qa": 288}, dev_n_answerable=288)
    small = dict(dev_abstain=0.02, dev_family={"closed_qa": 0.64}, dev_n={"closed_qa": 96}, dev_n_answerable=96)
    assert ppo.collapsed(small, first, cfg) == ""
    big = lambda d: dict(d, dev_n={"closed_qa": 10_000}, dev_n_answerable=10_000)  # noqa: E731
    assert ppo.collapsed(big(small), big(first), cfg) == "closed_qa -6 pts"
    assert ppo.collapsed(dict(big(small), dev_family={"closed_qa": 0.68}), big(first), cfg) == ""
    assert ppo.se_diff(0.5, 100, 0.5, 100) == pytest.approx(0.0707, abs=1e-4) and ppo.se_diff(0.5, 0, 0.5, 9) == 0


def test_ppo_unanswerable_keep_drops_only_unanswerable_knowledge_prompts():
    recs = [dict(task="open_qa", answerable=i % 2 == 0, i=i) for i in range(20)] + [dict(task="chat", answerable=True, i=99)]
    kept = ppo.keep_unanswerable(recs, 0.3)
    assert [r["i"] for r in kept if not r["answerable"]] == [1, 3, 5]  # the first 30% of the 10, in order
    assert [r["i"] for r in kept if r["answerable"]] == [r["i"] for r in recs if r["answerable"]]
    assert ppo.keep_unanswerable(recs, 1.0) == recs


def test_ppo_sequences_mark_response_targets(enc):
    ids, mask = ppo.build_sequences(enc, [[1, 2, 3], [4, 5]], [[6, 7], [8, 9, 10]], "cpu")
    assert ids.tolist()[0][:5] == [1, 2, 3, 6, 7] and ids.tolist()[1] == [4, 5, 8, 9, 10]
    # mask position j marks target ids[:, j+1]: row 0 targets 6, 7 are at j = 2, 3; row 1 targets 8, 9, 10 at 1..3
    assert mask.tolist() == [[0, 0, 1, 1], [0, 1, 1, 1]]


# ---------------------------------------------------------------------------------------------- evaluation


def test_win_rate_and_ci_on_hand_made_scores():
    wr, ci = evaluate.win_rate([1.0, 0.0, 0.5, 2.0], [0.0, 1.0, 0.5, 1.0])  # win, loss, tie, win
    assert wr == pytest.approx(2.5 / 4)
    outcomes = torch.tensor([1.0, 0.0, 0.5, 1.0])
    half = 1.96 * outcomes.std().item() / 2
    assert ci == pytest.approx([2.5 / 4 - half, 2.5 / 4 + half])


def test_win_rate_ci_counts_prompts_not_draws():
    # three prompts, two draws each: prompt 1 wins both draws, prompt 2 wins one and loses one, prompt 3 loses both
    ppo_gold, sft_gold = [1.0, 1.0, 1.0, 0.0, 0.0, 0.0], [0.0, 0.0, 0.0, 1.0, 1.0, 1.0]
    wr, ci = evaluate.win_rate(ppo_gold, sft_gold, draws=2)
    assert wr == pytest.approx(3 / 6)
    per_prompt = torch.tensor([1.0, 0.5, 0.0])  # the CI is over these three, not over six outcomes
    half = 1.96 * per_prompt.std().item() / math.sqrt(3)
    assert ci == pytest.approx([0.5 - half, 0.5 + half])
    assert ci[1] - ci[0] > evaluate.win_rate(ppo_gold, sft_gold)[1][1] - evaluate.win_rate(ppo_gold, sft_gold)[1][0]


def test_accuracy_change_is_paired_by_prompt_and_per_family():
    recs = [dict(task="a")] * 6 + [dict(task="b")] * 2  # three prompts of family a, one of b; two draws each
    sft = [1, 1, 1, 0, 0, 0, 1, 1]
    ppo = [1, 0, 1, 1, 0, 0, 0, 0]  # a: prompt 1 -0.5, prompt 2 +0.5, prompt 3 0; b: -1
    ch = evaluate.accuracy_change(recs, ppo, sft, draws=2)
    half = 1.96 * torch.tensor([-0.5, 0.5, 0.0]).std().item() / math.sqrt(3)
    assert ch["a"] == pytest.approx([0.0, -half, half])
    assert ch["b"][0] == -1.0 and math.isnan(ch["b"][1])  # one prompt: no interval
    flags = evaluate.hacking_flags(dict(sft=dict(win_rate_vs_sft=0.5, abstain_rate_answerable=0.0,
                                                 task_accuracy=dict(a=0.5, b=1.0)),
                                        ppo=dict(win_rate_vs_sft=0.6, abstain_rate_answerable=0.0,
                                                 task_accuracy=dict(a=0.5, b=0.0), task_accuracy_vs_sft=ch)))
    assert flags["ppo"]["accuracy_drops"] == {"b": 1.0} and list(flags["ppo"]["accuracy_drops_ci95"]) == ["b"]


def test_judge_gold_gain_is_paired_by_prompt():
    from data.labeler import gold
    from data.tasks import _record
    r = dict(_record("brainstorming", "List three fruits.", "brainstorming/0", False, category="fruits", n_items=3), id="t-1")
    sft_texts = ["apple, apple, pear.", "apple, pear, plum.", "apple.", "pear, plum, apple."]  # 2 prompts x 2 draws
    ppo_texts = ["apple, pear, plum.", "apple, pear, plum.", "apple.", "apple, apple, apple."]
    sft_res, sft_totals, _ = evaluate.judge([r] * 4, sft_texts, None, None, draws=2)
    res, totals, correct = evaluate.judge([r] * 4, ppo_texts, None, sft_totals, draws=2)
    assert sft_res["gold_vs_sft"] == 0 and correct == [gold(r, t)["correct"] for t in ppo_texts]
    d = [(totals[0] - sft_totals[0] + totals[1] - sft_totals[1]) / 2, (totals[3] - sft_totals[3]) / 2]  # per prompt
    assert d[0] > 0 > d[1] and res["gold_vs_sft"] == pytest.approx(sum(d) / 2)
    half = 1.96 * torch.tensor(d).std().item() / math.sqrt(2)
    assert res["gold_vs_sft_ci95"] == pytest.approx([sum(d) / 2 - half, sum(d) / 2 + half])


def test_best_of_n_kl_formula():
    assert evaluate.bon_kl(1) == 0
    assert evaluate.bon_kl(4) == pytest.approx(math.log(4) - 0.75)
    assert evaluate.bon_kl(64) == pytest.approx(math.log(64) - 63 / 64)


def test_reward_hacking_is_flagged():
    base = dict(win_rate_vs_sft=0.5, abstain_rate_answerable=0.05, task_accuracy=dict(open_qa=0.9, other=0.8))
    honest = dict(win_rate_vs_sft=0.7, abstain_rate_answerable=0.06, task_accuracy=dict(open_qa=0.9, other=0.85))
    hacker = dict(win_rate_vs_sft=0.7, abstain_rate_answerable=0.5, task_accuracy=dict(open_qa=0.2, other=0.8))
    flags = evaluate.hacking_flags(dict(sft=base, ppo=honest, ppo_ptx=hacker))
    assert list(flags) == ["ppo_ptx"] and "open_qa" in flags["ppo_ptx"]["accuracy_drops"]


def test_list_mistakes_counts_repeats_and_extra_items_and_repairs_only_repeats():
    from data.labeler import gold
    from data.tasks import _record
    r = dict(_record("brainstorming", "List three fruits.", "brainstorming/0", False, category="fruits", n_items=3), id="t-1")
    other = _record("chat", "Say hello to Bimo.", "chat/0", False, name="Bimo", act="greet")
    texts = ["apple, apple, pear.", "apple, pear, plum, lemon.", "apple, pear, plum.", "Sure: mango, mango, plum.",
             "Hello, Bimo!"]
    res = evaluate.list_mistakes([r, r, r, r, other], texts)
    assert (res["n"], res["repeated"], res["too_many"], res["rm_pairs"]) == (4, 0.5, 0.25, 1)
    assert res["rm_prefers_repaired"] is None  # no RM given
    seen = []

    def score(recs, ts):  # an RM that counts distinct items, and keeps what it was shown
        seen.extend(ts)
        return [len(set(t.split(", "))) for t in ts]

    res = evaluate.list_mistakes([r, r, r, r, other], texts, score)
    repaired = seen[0]
    assert res["rm_prefers_repaired"] == 1.0 and seen[1] == "apple, apple, pear."  # only the plain list is repaired
    items = repaired.rstrip(".").split(", ")
    assert items[::2] == ["apple", "pear"] and len(set(items)) == 3 and gold(r, repaired)["correct"]
    assert evaluate.list_mistakes([r, r, r, r], texts[:4], lambda recs, ts: [0.0] * len(ts))["rm_prefers_repaired"] == 0
