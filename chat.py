"""
The classroom demo: type a prompt, see the base, SFT and PPO models answer side by side, each with its reward
model score r_θ (what PPO optimised) and, when the prompt is one the simulated world knows, its gold score
(what the labelers really think).

    python chat.py --preset cpu
    > What is Dorvan's job?              a prompt of your own (gold only if the world knows this prompt)
    > :7                                 eval prompt number 7 (always judged by gold)
    > :random                            a random eval prompt
    > :quit

Reads out/<preset>/{base,sft,ppo,ppo_ptx,rm}.pt (whichever exist) and data/<preset>/*_prompts.jsonl.
Greedy decoding, so the same prompt always gets the same answers.
"""

import os
import random

import torch

import model as M
from data.labeler import gold


def known_prompts(preset):
    """Every prompt record of the world, by prompt text, so typed prompts can be judged when possible."""
    recs = {}
    for f in ("eval_prompts", "dev_prompts", "ppo_prompts", "rm_prompts", "sft"):
        path = os.path.join(M.data_dir(preset), f + ".jsonl")
        if os.path.exists(path):
            for r in M.read_jsonl(path, preset):
                recs.setdefault(r["prompt"], r)
    return recs


def answer_all(models, rm, enc, prompt, record, max_new_tokens=48):
    """(name, answer, RM score, gold total or None) for each model."""
    rows = []
    for name, m in models.items():
        text = M.decode(enc, M.respond(m, enc, [prompt], max_new_tokens)[0])
        score = None
        if rm is not None:
            with torch.no_grad():
                score = M.reward_scores(rm, enc, [(prompt, text)], "cpu").item()
        rows.append((name, text, score, gold(record, text)["total"] if record else None))
    return rows


def main():
    p = M.stage_args(__doc__.split("\n")[1], training=False)
    args = p.parse_args()
    out = args.out or os.path.join("out", args.preset)
    enc = M.load_tokenizer(args.preset)
    load = lambda n: M.load_checkpoint(os.path.join(out, f"{n}.pt"), f"make all PRESET={args.preset}", enc.tokenizer_id)[0].eval()  # noqa: E731
    models = {n: load(n) for n in ("base", "sft", "ppo", "ppo_ptx") if os.path.exists(os.path.join(out, f"{n}.pt"))}
    if not models:
        M.die(f"no checkpoints in {out}: run `make all PRESET={args.preset}` first")
    rm = load("rm") if os.path.exists(os.path.join(out, "rm.pt")) else None
    records = known_prompts(args.preset)
    evals = M.read_jsonl(os.path.join(M.data_dir(args.preset), "eval_prompts.jsonl"), args.preset)
    rng = random.Random(args.seed)
    print(f"models: {', '.join(models)}; type a prompt, ':N' for eval prompt N, ':random', or ':quit'")
    while True:
        try:
            line = input("> ").strip()
        except EOFError:
            break
        if not line:
            continue
        if line in (":quit", ":q"):
            break
        if line.startswith(":"):
            if line == ":random":
                record = rng.choice(evals)
            elif line[1:].isdigit() and int(line[1:]) < len(evals):
                record = evals[int(line[1:])]
            else:
                print(f"unknown command {line!r}: use :N (0..{len(evals) - 1}), :random or :quit")
                continue
            prompt = record["prompt"]
            print(f"prompt [{record['task']}, tier {record.get('tier')}]: {prompt}")
        else:
            prompt, record = line, records.get(line)
        for name, text, score, g in answer_all(models, rm, enc, prompt, record):
            rm_s = f"RM {score:+.2f}" if score is not None else "RM n/a"
            g_s = f"gold {g:+.2f}" if g is not None else "gold n/a (prompt not in the world)"
            shown = text.replace("\n", " / ")  # one line per model
            print(f"  {name:8s} {rm_s:9s} {g_s:10s} | {shown}")


if __name__ == "__main__":
    main()
