"""
Pretraining: the base model that plays GPT-3 in our miniature.

InstructGPT starts from GPT-3, a language model trained on the internet (paper §3.5: "we start with the GPT-3
pretrained language models from Brown et al. 2020"). Ours is trained here, in minutes, on the simulated
internet in data/<preset>/corpus.txt: encyclopedia sentences about a fictional world, stories, reviews, forum
threads whose answers are of mixed quality, and some toxic text. It learns the language and the facts, and
also the bad habits; it has never seen the chat format, so it does not follow instructions.

    python pretrain.py --preset cpu            # ~50 min on 2 CPU cores in fp32, less with fast bf16 (README)
    python pretrain.py --preset test           # seconds, for the tests
    python pretrain.py --preset cpu --n-layer 6 --n-embd 256 --out out/cpu-6l256   # a 2.5x larger model: the
                                               # stages after it read the size from base.pt (EARLIER_RUNS.md,
                                               # "Measured on the AMX machine")

Reads  data/<preset>/corpus.txt, corpus_heldout.txt, tokenizer.bpe, eval_prompts.jsonl, kb.json (the probes)
Writes out/<preset>/base.pt, pretrain_metrics.json, pretrain_loss.png

Objective: next-token cross-entropy, −(1/N) Σ_t log π(x_t | x_<t), on random windows of the corpus.
AdamW (decay on matrices only), linear warmup + cosine decay, gradient clipping at 1.0.

Deviations from the paper (GPT-3: 175B parameters, 300B tokens):
  1. ~2M parameters and ~25M tokens (cpu preset): what 2 CPU cores train in 50 minutes in fp32 (4,000 steps
     took 16 with fast bf16). SFT's competence comes before minutes, and tokens bought more of it than
     parameters: measured on the same corpus and SFT data (EARLIER_RUNS.md), 8M tokens gave an SFT model that
     met the competence goal on 9 of 13 task families, 16M tokens on 12 (rewrite 18% -> 61%, brainstorming 41% -> 68%,
     rare facts known 10% -> 31%), while a 2.5x larger model on 8M tokens also met 9. 4M tokens gave sums 52%.
     On a later corpus 16M tokens met the goal on 12, 11 and 11 families with SFT seeds 1337, 1 and 2, and 25M
     tokens on 12, 13 and 12 (EARLIER_RUNS.md, "Six thousand pretraining steps"), for 16 more minutes in fp32.
  2. The "internet" is generated (data/world.py), so we can measure exactly which facts the model knows, and
     whether it can look a fact up in its context (the reading probe: what closed QA will ask of SFT).
  3. A byte-level BPE of a few thousand tokens trained on our corpus instead of GPT-2's 50k vocabulary.
"""

import json
import os
import random
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

import model as M


@dataclass
class Config:
    batch_size: int = 16
    max_iters: int = 6000  # 24.6M tokens (~21 passes over the corpus). 2000 steps gave an SFT model whose greedy
    # competence met the goal on 9 of 13 families, 4000 on 11 or 12, 6000 on 12 or 13 (deviation 1); 1000: sums 52%
    lr: float = 2e-3
    warmup: int = 40
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    dropout: float = 0.0
    eval_every: int = 100
    eval_batches: int = 8
    log_every: int = 20


PRESETS = {
    "test": Config(batch_size=8, max_iters=60, lr=3e-3, warmup=5, eval_every=30, eval_batches=2, log_every=10),
    "cpu": Config(),
    "gpu": Config(batch_size=64, max_iters=20000, lr=6e-4, warmup=500, eval_every=500, eval_batches=20,
                  log_every=50),
}


def load_tokens(path, enc, preset):
    """The corpus as one long array of token ids; documents are separated by <|endoftext|>."""
    if not os.path.exists(path):
        M.die(f"{os.path.relpath(path)} not found: run `python data/world.py --preset {preset}` first")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    return np.array(enc.encode(text, allowed_special={M.EOT}), dtype=np.int64)


def get_batch(tokens, B, T, rng, device):
    """B random windows of T+1 tokens: inputs x = window[:-1], targets y = window[1:]."""
    starts = rng.integers(0, len(tokens) - T - 1, size=B)
    w = torch.from_numpy(np.stack([tokens[s : s + T + 1] for s in starts]))  # (B, T+1)
    return w[:, :-1].to(device), w[:, 1:].to(device)


def lm_loss(model, x, y):
    """Mean next-token cross-entropy = −mean log π(y_t | x_≤t), via the hand-written log-prob."""
    return -model.logprobs(x, y).mean()


@torch.no_grad()
def heldout_loss(model, tokens, B, T, n_batches, seed=0):
    """Mean LM loss on fixed windows of the held-out corpus (same windows every call)."""
    model.eval()
    rng = np.random.default_rng(seed)
    losses = [lm_loss(model, *get_batch(tokens, B, T, rng, next(model.parameters()).device)).item()
              for _ in range(n_batches)]
    model.train()
    return float(np.mean(losses))


@torch.no_grad()
def first_lines(model, enc, prompts, max_new_tokens):
    """The first line of each prompt's greedy continuation (prompts: token-id lists), in batches of 64."""
    model.eval()
    outs = []
    for i in range(0, len(prompts), 64):
        outs += M.generate(model, prompts[i : i + 64], max_new_tokens, temperature=0, eot=enc.eot_token)
    model.train()
    return [M.decode(enc, o).split("\n")[0] for o in outs]


@torch.no_grad()
def knowledge_probe(model, enc, records, max_new_tokens=16):
    """Ask about KB facts in the corpus's own forum Q&A format; return the share answered right (greedy).

    This is how we know the base model *knows* things: alignment can only unlock knowledge that is there.
    """
    from data.labeler import corpus_question

    pairs = [corpus_question(r) for r in records]
    texts = first_lines(model, enc, [enc.encode(prefix, allowed_special={M.EOT}) for prefix, _ in pairs], max_new_tokens)
    right = [answer.lower() in t.lower() for (_, answer), t in zip(pairs, texts)]
    return float(np.mean(right)) if right else float("nan"), list(zip(pairs, texts))


@torch.no_grad()
def reading_probe(model, enc, kb, n=200, seed=0, max_new_tokens=12):
    """New reading tests like the corpus's (data/world.py, doc_reading): the share whose first question the model
    answers with the right person's job or pet, which only the passage tells (greedy, corpus format).

    Two or three people per passage, so a value of the passage picked at random is right ~40% of the time.
    Closed QA asks the same of SFT: what the base model cannot look up here, SFT has nothing to unlock.
    """
    from data.world import doc_reading

    rng = random.Random(seed)
    docs = [doc_reading(rng, kb) for _ in range(n)]  # ["Reading test.", passage, "Q: ...", "A: ... value.", ...]
    prompts = [enc.encode("\n".join(d[:3]) + "\nA:") for d in docs]
    answers = [d[3].rstrip(".").split()[-1] for d in docs]
    firsts = first_lines(model, enc, prompts, max_new_tokens)
    return float(np.mean([a in t.rstrip(".").split() for a, t in zip(answers, firsts)]))


def main():
    p = M.stage_args(__doc__.split("\n")[1])
    p.add_argument("--max-iters", dest="max_iters", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--n-layer", dest="n_layer", type=int, help="model size (default: the preset's, model.py)")
    p.add_argument("--n-head", dest="n_head", type=int)
    p.add_argument("--n-embd", dest="n_embd", type=int)
    args = p.parse_args()
    cfg = M.override(PRESETS[args.preset], args)
    out = args.out or os.path.join("out", args.preset)
    device = M.get_device(args.device)
    M.set_seed(args.seed)
    M.set_attention_impl(M.default_attention_impl(device))
    M.set_precision(args.precision, device)
    rng = np.random.default_rng(args.seed)

    enc = M.load_tokenizer(args.preset)
    ddir = M.data_dir(args.preset)
    train_tokens = load_tokens(os.path.join(ddir, "corpus.txt"), enc, args.preset)
    val_tokens = load_tokens(os.path.join(ddir, "corpus_heldout.txt"), enc, args.preset)
    # the preset's model size unless a flag changes it; later stages read the size from base.pt
    size = {k: getattr(args, k) for k in ("n_layer", "n_head", "n_embd") if getattr(args, k)}
    mcfg = M.GPTConfig(vocab_size=enc.n_vocab, dropout=cfg.dropout, **{**M.MODEL_PRESETS[args.preset], **size})
    model = M.GPT(mcfg).to(device)
    T = mcfg.block_size
    print(f"corpus {len(train_tokens):,} tokens (held-out {len(val_tokens):,}), vocab {enc.n_vocab}, "
          f"model {model.num_params() / 1e6:.2f}M parameters, {cfg.max_iters} iters x {cfg.batch_size} x {T} tokens")

    opt = M.configure_optimizer(model, cfg.lr, cfg.weight_decay)
    peak = M.measure_matmul_flops(dtype=torch.bfloat16 if M.BF16 else torch.float32)
    flops_tok = M.flops_per_token(mcfg, model.num_params(), T)
    progress = M.Progress(cfg.max_iters, cfg.log_every, "pretrain")
    log = dict(step=[], train=[], val_step=[], val=[])
    t0 = time.time()
    for it in range(cfg.max_iters):
        lr = M.cosine_lr(it, cfg.max_iters, cfg.lr, cfg.warmup)
        for g in opt.param_groups:
            g["lr"] = lr
        x, y = get_batch(train_tokens, cfg.batch_size, T, rng, device)  # (B, T), (B, T)
        with M.autocast(device):  # the body in bf16 where the hardware has it (model.py, "mixed precision")
            loss = lm_loss(model, x, y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        log["step"].append(it)
        log["train"].append(loss.item())
        if it % cfg.eval_every == 0 or it == cfg.max_iters - 1:
            log["val_step"].append(it)
            log["val"].append(heldout_loss(model, val_tokens, cfg.batch_size, T, cfg.eval_batches))
        tps = progress.tokens / max(time.time() - progress.t0, 1e-9)
        progress.step(it, x.numel(), loss=loss.item(), val=log["val"][-1], lr=lr, mfu=f"{100 * tps * flops_tok / peak:.0f}%")
    train_time = time.time() - t0

    M.save_checkpoint(os.path.join(out, "base.pt"), model, args.preset, "pretrain", enc.tokenizer_id)
    M.plot_curves(os.path.join(out, "pretrain_loss.png"),
                  {"train": (log["step"], log["train"]), "held-out": (log["val_step"], log["val"])},
                  "pretraining loss (nats/token)")

    # What the base model is: a corpus continuer that knows facts but does not follow instructions.
    model.eval()
    gen = torch.Generator(device=device).manual_seed(args.seed)
    print("\n--- samples (corpus continuations, temperature 0.8) ---")
    for prefix in ["The ", "Q: "]:
        ids = M.generate(model, [enc.encode(prefix)], 60, temperature=0.8, top_k=50, generator=gen, eot=enc.eot_token)[0]
        print(repr(prefix + M.decode(enc, ids)))
    records = M.read_jsonl(os.path.join(ddir, "eval_prompts.jsonl"), args.preset)
    chat = [r for r in records if r["task"] == "rewrite"][:1] + [r for r in records if r["task"] == "generation"][:1]
    print("\n--- asked an instruction in the chat format (it was never taught it) ---")
    for r in chat:
        ids = M.generate(model, [M.encode_prompt(enc, r["prompt"])], 40, temperature=0, eot=enc.eot_token)[0]
        print(f"prompt: {r['prompt']!r}\nbase:   {M.decode(enc, ids)!r}")
    common = [r for r in records if r["task"] == "open_qa" and r.get("tier") == "common"]
    rare = [r for r in records if r["task"] == "open_qa" and r.get("tier") == "rare"]
    acc_common, examples = knowledge_probe(model, enc, common)
    acc_rare, _ = knowledge_probe(model, enc, rare)
    print("\n--- knowledge probe: KB facts asked in the corpus's own Q&A format (greedy) ---")
    for (prefix, answer), text in examples[:3]:
        print(f"{prefix[-60:]!r} -> {text!r} (right: {answer!r})")
    print(f"common-tier facts right: {acc_common:.1%} of {len(common)}; rare-tier: {acc_rare:.1%} of {len(rare)}")
    with open(os.path.join(ddir, "kb.json")) as f:
        acc_reading = reading_probe(model, enc, json.load(f))
    print(f"reading tests (a job or pet looked up in the passage; chance ~40%): {acc_reading:.1%} of 200")

    metrics = dict(
        train_loss=float(np.mean(log["train"][-20:])),
        heldout_loss=log["val"][-1],
        tokens_seen=progress.tokens,
        tokens_per_s=progress.tokens / train_time,
        train_seconds=train_time,
        params=model.num_params(),
        base_common_fact_accuracy=acc_common,
        base_rare_fact_accuracy=acc_rare,
        base_reading_accuracy=acc_reading,
        config=asdict(cfg),
    )
    M.write_json(os.path.join(out, "pretrain_metrics.json"), metrics)
    print(f"\nheld-out loss {metrics['heldout_loss']:.3f}, {metrics['tokens_per_s']:,.0f} tok/s, {train_time:.0f}s")
    print(f"wrote {out}/base.pt, pretrain_metrics.json, pretrain_loss.png")
    print(f"next: python sft.py --preset {args.preset}")


if __name__ == "__main__":
    main()
