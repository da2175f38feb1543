"""
Step 1 of InstructGPT (Figure 2): supervised fine-tuning (SFT) on labeler demonstrations.

Paper §3.5 "Supervised fine-tuning (SFT)": "We fine-tune GPT-3 on our labeler demonstrations using supervised
learning. We trained for 16 epochs, using a cosine learning rate decay, and residual dropout of 0.2. We do our
final SFT model selection based on the RM score on the validation set."

    python sft.py --preset cpu                 # about 3 min on 2 CPU cores (fp32)
    python sft.py --preset test

Reads  out/<preset>/base.pt, data/<preset>/sft.jsonl, dev_prompts.jsonl, eval_prompts.jsonl (samples only)
Writes out/<preset>/sft.pt, sft_metrics.json, sft_loss.png

The loss is the LM loss on the response tokens and the final <|endoftext|> only:
    L_SFT = −(1/|y|) Σ_t log π(y_t | x, y_<t)          (prompt tokens x are masked out)
so the model learns to *answer* in the chat format "<|user|>{x}<|assistant|> {y}<|endoftext|>", not to
write prompts.

Deviations from the paper:
  1. Scale: a ~2M-parameter base model and ~3.8k demonstrations (paper: 175B, ~13k), 8 epochs (paper: 16),
     so that SFT fits in about 3 minutes on a CPU (166-167 s in fp32 on a 2-core CPU without fast bf16). Residual
     dropout 0.1 (paper 0.2). Measured at cpu on the 6,000-step base (greedy answers on the answerable eval
     prompts, README "SFT competence"): 8 epochs met the competence goal on all 13 task families with SFT seeds
     1337, 1 and 2 in 163-166 s; 10 epochs on 12, 13 and 12 in 206-219 s, with dev gold ~0.04 higher. On the
     4,000-step base 8 epochs had cost a family, and on earlier bases 6 epochs left summarisation at 15% where
     10 reached 90%: more epochs forget more of the corpus (held-out LM loss 0.49 -> 4.44 nats/token after
     8 epochs, 4.97 after 10), the alignment tax of SFT, and buy competence until the base model knows enough.
  2. Checkpoint selection: the paper picks the epoch with the best RM score on a validation set, but our RM is
     trained on samples of this very SFT model, so it does not exist yet. We keep the epoch whose greedy
     answers on the small dev set score best with the simulated labelers (as the paper's labelers judged
     validation outputs). The eval prompts are never used to choose anything.
  3. Validation loss on held-out demonstrations is logged every epoch, as the paper's appendix does (it notes
     SFT overfits on validation loss after 1 epoch while more epochs still help preference scores).

Not in the paper, off by default: `--corpus-coef c` adds c times the LM loss on corpus windows to every step
(corpus replay, SFT's version of PPO-ptx), so that SFT forgets less of the corpus. Measured at cpu, c = 1
(`--out out/cpu-replay`, 376 s): held-out corpus loss 4.66 -> 0.89 nats/token and greedy common facts on dev
79% -> 100%, but abstention on names it never saw falls (nokb dev questions answered right 68% -> 16%) and
dev gold drops (+0.793 -> +0.703); the RM trained on its samples reaches right > "I don't know" 0.91, yet PPO
on it learns to abstain everywhere within 5 iterations. EARLIER_RUNS.md ("Tried and not kept") has the numbers.
"""

import copy
import os
import random
import time
from dataclasses import asdict, dataclass

import numpy as np
import torch

import model as M
from data.labeler import gold


@dataclass
class Config:
    epochs: int = 8
    batch_size: int = 32
    lr: float = 1e-3
    warmup: int = 20
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    dropout: float = 0.1
    val_fraction: float = 0.05
    max_new_tokens: int = 64
    dev_prompts: int = 200  # how many dev prompts judge each epoch (checkpoint choice)
    judge_from: int = 7  # the labelers judge epochs from this one on (in 10-epoch runs earlier ones never won:
    # dev gold rose every epoch, +0.655 at epoch 7 → +0.785 at epoch 10; judging costs ~8-15 s per epoch)
    log_every: int = 25
    corpus_coef: float = 0.0  # weight of the LM loss on pretraining-corpus windows added to each step (0: off)
    corpus_batch: int = 4  # corpus windows per step, each corpus_len tokens
    corpus_len: int = 128


PRESETS = {
    "test": Config(epochs=2, batch_size=16, lr=1e-3, warmup=2, dev_prompts=30, log_every=5, max_new_tokens=32),
    "cpu": Config(),
    "gpu": Config(epochs=16, batch_size=32, lr=1e-4, warmup=100, dropout=0.2, dev_prompts=500, log_every=50),
}


def make_examples(enc, records):
    """Each demonstration -> (token ids of the whole conversation, number of prompt tokens)."""
    return [M.encode_chat(enc, r["prompt"], r["response"]) for r in records]


def length_batches(examples, batch_size, rng):
    """Shuffled batches of examples of similar length (less padding, same examples per epoch): shuffle, sort
    within windows of 16 batches by length, cut into batches, shuffle the batches."""
    ex = list(examples)
    rng.shuffle(ex)
    window = 16 * batch_size
    batches = []
    for w in range(0, len(ex), window):
        chunk = sorted(ex[w : w + window], key=lambda e: len(e[0]))
        batches += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
    rng.shuffle(batches)
    return batches


def sft_loss(model, examples, device):
    """Mean −log π over response tokens (and the final EOT) of a batch; prompt tokens are masked.

    ids: (B, T) right-padded; inputs ids[:, :-1] predict targets ids[:, 1:]. Target position t is counted when
    it lies inside the response: n_prompt <= t+1 < length.
    """
    ids, lengths = M.right_pad([e[0] for e in examples], 0, device)  # (B, T), (B,)
    n_prompt = torch.tensor([e[1] for e in examples], device=device)  # (B,)
    mask = M.target_mask(ids.size(1), n_prompt, lengths, device).bool()  # (B, T-1) response targets only
    logp = model.logprobs_at(ids[:, :-1], ids[:, 1:], mask)  # (N,) the N response targets, in row order
    return -logp.mean(), int(mask.sum())


@torch.no_grad()
def dev_gold(model, enc, records, max_new_tokens):
    """Mean gold total of the model's greedy answers on dev prompts (the simulated labelers judge)."""
    outs = M.respond(model, enc, [r["prompt"] for r in records], max_new_tokens, temperature=0)
    return float(np.mean([gold(r, M.decode(enc, o))["total"] for r, o in zip(records, outs)]))


def main():
    p = M.stage_args(__doc__.split("\n")[1])
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", dest="batch_size", type=int)
    p.add_argument("--lr", type=float)
    p.add_argument("--dropout", type=float)
    p.add_argument("--corpus-coef", dest="corpus_coef", type=float,
                   help="weight of the corpus LM loss mixed into each SFT step (0: the paper's SFT)")
    args = p.parse_args()
    cfg = M.override(PRESETS[args.preset], args)
    out = args.out or os.path.join("out", args.preset)
    device = M.get_device(args.device)
    M.set_seed(args.seed)
    M.set_attention_impl(M.default_attention_impl(device))
    M.set_precision(args.precision, device)
    rng = random.Random(args.seed)

    enc = M.load_tokenizer(args.preset)
    ddir = M.data_dir(args.preset)
    M.borrow(out, args.preset, ["base.pt"])  # e.g. --out out/cpu-sft10 reuses the default base model
    model, _ = M.load_checkpoint(os.path.join(out, "base.pt"), f"python pretrain.py --preset {args.preset}",
                                 enc.tokenizer_id, device, dropout=cfg.dropout)
    records = M.read_jsonl(os.path.join(ddir, "sft.jsonl"), args.preset)
    dev = M.read_jsonl(os.path.join(ddir, "dev_prompts.jsonl"), args.preset)[: cfg.dev_prompts]
    rng.shuffle(records)
    n_val = max(1, int(len(records) * cfg.val_fraction))
    val, train = make_examples(enc, records[:n_val]), make_examples(enc, records[n_val:])
    steps_per_epoch = (len(train) + cfg.batch_size - 1) // cfg.batch_size
    total = cfg.epochs * steps_per_epoch
    print(f"{len(train)} demonstrations for training, {len(val)} for validation, {len(dev)} dev prompts; "
          f"{cfg.epochs} epochs x {steps_per_epoch} steps")

    opt = M.configure_optimizer(model, cfg.lr, cfg.weight_decay)
    progress = M.Progress(total, cfg.log_every, "sft")
    log = dict(step=[], train=[], epoch=[], val=[], dev_gold=[])
    best = (-float("inf"), None, -1)
    corpus = M.corpus_batches(args.preset, enc, cfg.corpus_batch, cfg.corpus_len, args.seed) if cfg.corpus_coef > 0 else None
    t0 = time.time()
    step = 0
    for epoch in range(cfg.epochs):
        model.train()
        for batch in length_batches(train, cfg.batch_size, rng):
            for g in opt.param_groups:
                g["lr"] = M.cosine_lr(step, total, cfg.lr, cfg.warmup, min_ratio=0.0)
            with M.autocast(device):  # the body in bf16 where the hardware has it (model.py, "mixed precision")
                loss, n_tok = sft_loss(model, batch, device)
                total_loss = loss
                if corpus is not None:  # corpus replay: + coef · LM loss on pretraining text, so SFT forgets less
                    x = next(corpus).to(device)  # (B, T+1)
                    total_loss = loss - cfg.corpus_coef * model.logprobs(x[:, :-1], x[:, 1:]).mean()
            opt.zero_grad(set_to_none=True)
            total_loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            log["step"].append(step)
            log["train"].append(loss.item())
            progress.step(step, n_tok, loss=loss.item(), epoch=epoch)
            step += 1
        model.eval()
        with torch.no_grad():
            val_loss = float(np.mean([sft_loss(model, val[i : i + 64], device)[0].item() for i in range(0, len(val), 64)]))
        score = dev_gold(model, enc, dev, cfg.max_new_tokens) if epoch + 1 >= min(cfg.judge_from, cfg.epochs) else None
        log["epoch"].append(epoch + 1)
        log["val"].append(val_loss)
        log["dev_gold"].append(score)
        print(f"epoch {epoch + 1}: validation loss {val_loss:.3f}" + (f", dev gold {score:+.3f}" if score is not None else ""))
        if score is not None and score > best[0]:
            best = (score, copy.deepcopy(model.state_dict()), epoch + 1)
    train_time = time.time() - t0

    model.load_state_dict(best[1])
    model.eval()
    print(f"keeping epoch {best[2]} (best dev gold {best[0]:+.3f})")
    model.cfg.dropout = 0.0  # later stages run without dropout unless they ask for it
    M.save_checkpoint(os.path.join(out, "sft.pt"), model, args.preset, "sft", enc.tokenizer_id,
                      extra=dict(epoch=best[2]))
    M.plot_curves(os.path.join(out, "sft_loss.png"),
                  {"train": (log["step"], log["train"]),
                   "validation": ([e * steps_per_epoch - 1 for e in log["epoch"]], log["val"])},
                  "SFT loss on response tokens (nats/token)")

    print("\n--- samples on held-out eval prompts (greedy) ---")
    evals = M.read_jsonl(os.path.join(ddir, "eval_prompts.jsonl"), args.preset)
    shown = list({r["task"]: r for r in evals}.values())[:8]
    for r, o in zip(shown, M.respond(model, enc, [r["prompt"] for r in shown], cfg.max_new_tokens)):
        text = M.decode(enc, o)
        print(f"[{r['task']}] {r['prompt']!r}\n   -> {text!r}  (gold {gold(r, text)['total']:+.2f})")

    metrics = dict(val_loss=log["val"], dev_gold=log["dev_gold"], chosen_epoch=best[2], train_seconds=train_time,
                   tokens_per_s=progress.tokens / train_time, config=asdict(cfg))
    M.write_json(os.path.join(out, "sft_metrics.json"), metrics)
    print(f"\nSFT took {train_time:.0f}s; wrote {out}/sft.pt, sft_metrics.json, sft_loss.png")
    print(f"next: python reward.py --preset {args.preset}")


if __name__ == "__main__":
    main()
