"""
How fast is the miniature, and what do the kernels in kernels.py buy? One table; every figure is a ratio of
two things measured in this same run, on this same machine, so a busy or a faster machine changes both sides.

    python bench.py                          # cpu preset, ~1-3 min on 2 cores
    python bench.py --json out/bench.json    # also write the figures as JSON
    python bench.py --preset test --quick    # seconds, to check the script itself

Rows:
  1. fp32 matmul peak of this machine (model.measure_matmul_flops), the denominator of MFU;
  2. training tokens/s of the preset's model (forward + backward + AdamW, random tokens) and its MFU,
     FLOPs per token from model.flops_per_token (PaLM, appendix B); once with what the stage scripts use
     (model.default_attention_impl + kernels.linear_logprob), once with the readable attention and log_softmax, and,
     on a CPU with native bf16, once more with the body under bf16 autocast (what the stages run where it
     measures >= 1.3x fp32: model.auto_bf16); then attention_fast against torch's fused SDPA, at the preset's
     block size and at 48 tokens (an SFT batch), in fp32 and (where native) bf16;
  3. greedy generation, KV cache (model.generate) vs recomputing the whole sequence every step, same batch
     of prompts, same number of new tokens;
  4. peak memory of the log-prob of the chosen tokens, forward + backward: naive (logits = h @ Wᵀ,
     log_softmax, gather) vs kernels.linear_logprob, at V = 4k and 50k;
  5. on CUDA only: kernels.flash_attention vs F.scaled_dot_product_attention and kernels.triton_logprob vs
     log_softmax + gather, in ms and GB/s.
"""

import argparse
import contextlib
import os
import time

import torch
import torch.nn.functional as F

import kernels
import model as M

# ---------------------------------------------------------------------------------------------------------
# Timing and memory probes
# ---------------------------------------------------------------------------------------------------------


# Every timing is the BEST of several repetitions (timeit's rule), on both sides of every ratio: on a
# shared machine other processes can only ever make a repetition slower, so the fastest one is the best
# estimate of what this machine does; a mean or median would mostly measure the neighbours.


def best_time(fn, reps, warmup=1):
    """(fastest wall time of fn() over reps calls after warmup calls, what the last call returned)."""
    for _ in range(warmup):
        fn()
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def matmul_peak(reps=5):
    """fp32 matmul FLOP/s: the best of several bursts of model.measure_matmul_flops (1024³ matmuls)."""
    return max(M.measure_matmul_flops() for _ in range(reps))


@contextlib.contextmanager
def quiet_stderr():
    """The profiler's C++ side prints start/stop lines on fd 2; hide them (only while profiling)."""
    saved = os.dup(2)
    with open(os.devnull, "w") as null:
        os.dup2(null.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)


def peak_cpu_memory(fn):
    """Peak bytes allocated by fn() above what was allocated before it, on CPU.

    Method: torch.profiler with profile_memory=True records every allocation and free that goes through
    torch's CPU allocator (every tensor's storage: outputs, temporaries, tensors autograd saves, gradients)
    as a "[memory]" event of +bytes or -bytes. Sorting them by time and keeping a running sum gives the
    bytes live at each instant that fn allocated; the maximum is its peak. Tensors made before fn (the
    inputs) are not counted; memory outside torch's allocator (numpy, Python objects) is not counted,
    and neither path here uses any. torch has no CPU equivalent of torch.cuda.max_memory_allocated.
    """
    from torch.profiler import ProfilerActivity, profile

    with quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    events = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events() if e.name() == "[memory]")
    live = peak = 0
    for _, nbytes in events:
        live += nbytes
        peak = max(peak, live)
    return peak


def cuda_ms(fn, reps=20):
    """Best CUDA time of fn() in ms (events around each call, after a warmup)."""
    fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return min(times)


# ---------------------------------------------------------------------------------------------------------
# The measurements
# ---------------------------------------------------------------------------------------------------------


def preset_config(preset, block_size=None):
    """The preset's model shapes; vocab from its tokenizer when data/<preset> exists, else 3000 (random
    tokens are all this benchmark feeds the model, so only the size of V matters)."""
    vocab = 3000
    path = os.path.join(M.data_dir(preset), "tokenizer.bpe")
    if os.path.exists(path):
        vocab = M.load_tokenizer(preset).n_vocab
    shapes = dict(M.MODEL_PRESETS[preset])
    if block_size is not None:
        shapes["block_size"] = block_size
    return M.GPTConfig(**shapes, vocab_size=vocab)


def bench_train(cfg, batch, steps, attn, use_kernels, bf16=False):
    """Training tokens/s at (batch, block_size): forward, loss -mean log π, backward, AdamW step; bf16: the
    forward under model.autocast, as the stage scripts run it where model.auto_bf16."""
    torch.manual_seed(0)
    M.BF16 = bf16
    model = M.GPT(cfg)
    optimizer = M.configure_optimizer(model, lr=1e-4)
    M.set_attention_impl(attn)
    M.USE_KERNELS = use_kernels
    T = cfg.block_size
    x = torch.randint(0, cfg.vocab_size, (batch, T + 1))

    def step():
        with M.autocast("cpu"):
            loss = -model.logprobs(x[:, :-1], x[:, 1:]).mean()  # the pretraining loss: next-token NLL
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    dt, _ = best_time(step, steps)
    M.USE_KERNELS, M.BF16 = True, False
    return batch * T / dt, M.flops_per_token(cfg, model.num_params(), T)


@torch.no_grad()
def generate_full_recompute(model, idx, max_new_tokens):
    """Greedy decoding without a cache: every step runs the whole (B, T0 + t) sequence again. The batched
    twin of model.generate_nocache, so both sides of the comparison see the same batch."""
    for _ in range(max_new_tokens):
        h = model(idx)[:, -1]  # (B, C) the last position, after recomputing all of them
        idx = torch.cat([idx, model.logits(h).argmax(-1, keepdim=True)], dim=1)
    return idx


def bench_generate(cfg, batch, prompt_len, new_tokens, reps=2):
    """tokens/s with the KV cache vs full recompute, greedy, and whether both chose the same tokens."""
    torch.manual_seed(0)
    model = M.GPT(cfg).eval()
    prompts = torch.randint(0, cfg.vocab_size, (batch, prompt_len))
    # eot=-1 is no token id: no row stops early, so both sides produce exactly batch * n tokens
    # (the prompts all have the same length, so left_pad never writes the -1 anywhere).
    cached_fn = lambda n: M.generate(model, prompts.tolist(), n, temperature=0, eot=-1)
    full_fn = lambda n: generate_full_recompute(model, prompts, n)[:, prompt_len:]
    cached_fn(4), full_fn(4)  # warm up both paths
    results = {}
    for n in new_tokens:
        t_cache, cached = best_time(lambda: cached_fn(n), reps, warmup=0)
        t_full, full = best_time(lambda: full_fn(n), reps, warmup=0)
        assert all(len(r) == n for r in cached), "the cached path must produce every requested token"
        agree = (torch.tensor(cached) == full).float().mean().item()
        results[n] = dict(cache_tps=batch * n / t_cache, full_tps=batch * n / t_full, agree=agree)
    return results


def bench_logprob_memory(n_rows, n_embd, V):
    """Peak bytes of forward + backward of log π(y) for (n_rows, n_embd) hidden states and a (V, n_embd) head."""
    torch.manual_seed(0)
    h = torch.randn(n_rows, n_embd, requires_grad=True)
    w = (torch.randn(V, n_embd) * 0.02).requires_grad_()
    y = torch.randint(0, V, (n_rows,))

    def naive():  # the textbook form: the (N, V) logits and log_softmax, kept for backward
        logits = h @ w.t()  # (N, V)
        logp = torch.log_softmax(logits, dim=-1).gather(1, y[:, None]).squeeze(1)  # (N,)
        logp.sum().backward()

    def ours():
        kernels.linear_logprob(h, w, y).sum().backward()

    out = {}
    for name, fn in (("naive", naive), ("ours", ours)):
        fn()  # warm up (first-call allocations), then measure
        h.grad = w.grad = None
        t0 = time.perf_counter()
        out[name] = peak_cpu_memory(fn)
        out[name + "_s"] = time.perf_counter() - t0
        h.grad = w.grad = None
    return out


def bench_cuda(rows):
    """Triton kernels vs torch on the GPU: ms and effective GB/s (bytes that must move at least once)."""
    dev, dt = "cuda", torch.bfloat16
    B, nh, T, hs = 8, 8, 1024, 64
    q, k, v = (torch.randn(B, nh, T, hs, device=dev, dtype=dt, requires_grad=True) for _ in range(3))
    do = torch.randn_like(q)
    attn_bytes = 4 * q.numel() * q.element_size()  # read q, k, v, write o
    for name, fn in (("triton flash", kernels.flash_attention),
                     ("sdpa", lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True))):
        ms = cuda_ms(lambda: fn(q, k, v))
        ms_fb = cuda_ms(lambda: torch.autograd.grad(fn(q, k, v), (q, k, v), do))
        rows.append((f"cuda attention fwd {name} (B{B} h{nh} T{T} d{hs} bf16)", f"{ms:.3f} ms",
                     f"{attn_bytes / ms / 1e6:.0f} GB/s", f"fwd+bwd {ms_fb:.3f} ms"))
    N, V = 8192, 50257
    logits = torch.randn(N, V, device=dev, dtype=dt)
    y = torch.randint(0, V, (N,), device=dev)
    lp_bytes = logits.numel() * logits.element_size()  # read the logits once
    t_ours = cuda_ms(lambda: kernels.triton_logprob(logits, y))
    t_naive = cuda_ms(lambda: torch.log_softmax(logits.float(), -1).gather(1, y[:, None]))
    rows.append((f"cuda log-prob fwd (N{N} V{V} bf16) triton vs log_softmax+gather",
                 f"{t_ours:.3f} ms {lp_bytes / t_ours / 1e6:.0f} GB/s",
                 f"{t_naive:.3f} ms {lp_bytes / t_naive / 1e6:.0f} GB/s", f"{t_naive / t_ours:.2f}x faster"))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="cpu", choices=M.PRESETS)
    p.add_argument("--batch", type=int, default=16, help="training batch (sequences of block_size tokens)")
    p.add_argument("--steps", type=int, default=6, help="timed training steps per configuration (best counts)")
    p.add_argument("--quick", action="store_true", help="tiny sizes: checks the script, not the machine")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = p.parse_args()
    t_start = time.time()
    rows = []  # (what, ours, baseline, ratio)
    fig = dict(preset=args.preset, threads=torch.get_num_threads())

    # 1 + 2. Training throughput against the matmul peak, measured before and after (the machine may be shared)
    cfg = preset_config(args.preset)
    batch, steps = (2, 2) if args.quick else (args.batch, args.steps)
    peak = matmul_peak()
    fast_tps, fpt = bench_train(cfg, batch, steps, attn=M.default_attention_impl("cpu"), use_kernels=True)
    slow_tps, _ = bench_train(cfg, batch, steps, attn="readable", use_kernels=False)
    peak = max(peak, matmul_peak())
    mfu, slow_mfu = fast_tps * fpt / peak, slow_tps * fpt / peak
    shape = f"{cfg.n_layer}L {cfg.n_embd}d V{cfg.vocab_size}, B{batch}xT{cfg.block_size}"
    rows.append(("fp32 matmul peak (1024^3 matmuls, this run)", f"{peak / 1e9:.1f} GFLOP/s", "", ""))
    ours = f"{M.default_attention_impl('cpu')} attn + linear_logprob"
    for name, tps, u in ((ours, fast_tps, mfu), ("readable attn + log_softmax", slow_tps, slow_mfu)):
        rows.append((f"train {name} ({shape})", f"{tps:,.0f} tok/s = {tps * fpt / 1e9:.1f} GFLOP/s",
                     f"peak {peak / 1e9:.1f} GFLOP/s", f"MFU {u:.1%}"))
    rows.append(("train speedup: ours vs readable", f"{fast_tps:,.0f} tok/s", f"{slow_tps:,.0f} tok/s",
                 f"{fast_tps / slow_tps:.2f}x"))
    if M.native_bf16("cpu"):  # the body's matmuls in bf16 (what --precision auto runs where model.auto_bf16)
        bf16_tps, _ = bench_train(cfg, batch, steps, attn=M.default_attention_impl("cpu"), use_kernels=True, bf16=True)
        bf16_peak = M.measure_matmul_flops(dtype=torch.bfloat16)
        rows.append(("bf16 matmul peak (1024^3 matmuls, this run)", f"{bf16_peak / 1e9:.1f} GFLOP/s", "", ""))
        rows.append((f"train speedup: bf16 autocast vs fp32 ({ours})", f"{bf16_tps:,.0f} tok/s",
                     f"{fast_tps:,.0f} tok/s", f"{bf16_tps / fast_tps:.2f}x"))
        fig.update(bf16_matmul_gflops=bf16_peak / 1e9, train_tokens_per_s_bf16=bf16_tps)
    # 2b. attention_fast (the CPU attention where bf16 is native: model.default_attention_impl) against torch's fused
    # SDPA, at the preset's block size (pretraining, RM, PPO) and at 48 tokens (SFT: demonstrations average 43),
    # in fp32 and, where the CPU has native bf16, in bf16
    for bf16 in (False, True) if M.native_bf16("cpu") else (False,):
        for T, b in ((cfg.block_size, batch), (48, 2 if args.quick else 32)):
            tps = {a: bench_train(preset_config(args.preset, block_size=T), b, steps, attn=a, use_kernels=True,
                                  bf16=bf16)[0] for a in ("fast", "sdpa")}
            rows.append((f"train T{T} (B{b}, {'bf16' if bf16 else 'fp32'}): attention_fast vs sdpa",
                         f"{tps['fast']:,.0f} tok/s", f"{tps['sdpa']:,.0f} tok/s", f"{tps['fast'] / tps['sdpa']:.2f}x"))
            fig[f"train_T{T}_{'bf16' if bf16 else 'fp32'}_tokens_per_s"] = tps
    fig.update(matmul_gflops=peak / 1e9, train_tokens_per_s=fast_tps, mfu=mfu, flops_per_token=fpt,
               train_batch=batch, train_tokens_per_s_readable=slow_tps, mfu_readable=slow_mfu)

    # 3. Generation: 4 prompts of 16 tokens; block_size raised so 256 new tokens fit after the prompt
    # (block_size only sizes the position table: the compute per token is the preset's).
    prompt_len, gen_batch = 16, 4
    new_tokens = (8, 16) if args.quick else (32, 128, 256)
    gcfg = preset_config(args.preset, block_size=max(cfg.block_size, prompt_len + max(new_tokens)))
    M.set_attention_impl(M.default_attention_impl("cpu"))
    for n, r in bench_generate(gcfg, gen_batch, prompt_len, new_tokens).items():
        speedup = r["cache_tps"] / r["full_tps"]
        rows.append((f"generate {n} new tok x{gen_batch} prompts: KV cache vs full recompute",
                     f"{r['cache_tps']:,.0f} tok/s", f"{r['full_tps']:,.0f} tok/s",
                     f"{speedup:.1f}x (same tokens {r['agree']:.0%})"))
        fig[f"kv_cache_speedup_{n}"] = speedup
        fig[f"gen_tokens_per_s_cache_{n}"], fig[f"gen_tokens_per_s_full_{n}"] = r["cache_tps"], r["full_tps"]

    # 4. Log-prob peak memory, a PPO-sized batch of rows (8 x 256) with the preset's width
    n_rows = 256 if args.quick else 8 * 256
    for V, key in ((4096, "4k"), (50257, "50k")):
        r = bench_logprob_memory(n_rows, cfg.n_embd, V)
        ratio = r["ours"] / r["naive"]
        rows.append((f"log-prob fwd+bwd peak mem, N={n_rows} V={V}: ours vs naive",
                     f"{r['ours'] / 2**20:,.0f} MB", f"{r['naive'] / 2**20:,.0f} MB",
                     f"{ratio:.3f} (time {r['ours_s'] / r['naive_s']:.2f}x)"))
        fig[f"logprob_peak_mem_ratio_{key}"] = ratio
        fig[f"logprob_peak_mb_ours_{key}"], fig[f"logprob_peak_mb_naive_{key}"] = r["ours"] / 2**20, r["naive"] / 2**20

    # 5. The Triton kernels themselves, where they are meant to run
    if torch.cuda.is_available() and kernels.HAVE_TRITON:
        bench_cuda(rows)
    else:
        rows.append(("cuda kernels (flash attention, triton log-prob)", "skipped: no GPU", "", ""))

    # the table
    widths = [max(len(str(r[i])) for r in rows + [("what", "ours", "baseline", "ratio")]) for i in range(4)]
    line = lambda r: "| " + " | ".join(str(c).ljust(w) for c, w in zip(r, widths)) + " |"
    print(f"bench.py --preset {args.preset}: torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(line(("what", "ours", "baseline", "ratio")))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    fig["seconds"] = time.time() - t_start
    print(f"({fig['seconds']:.0f} s)")
    if args.json:
        M.write_json(args.json, fig)
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
