"""
The GPT every stage shares, and the small pieces of machinery around it.

This file is the "175B GPT-3" of our miniature: a GPT-2-style decoder (Radford et al. 2019) written out
by hand so it can be read in one sitting beside the paper. Every stage script imports from here:

    pretrain.py   GPT + AdamW on the corpus                  -> base.pt
    sft.py        the same GPT on demonstrations (§3.5)      -> sft.pt
    reward.py     the same body with a scalar head (§3.5)    -> rm.pt
    ppo.py        policy / ref / value / rm (§3.5, eq. 2)    -> ppo.pt, ppo_ptx.pt
    evaluate.py   sampling + log-probs for every model       -> eval.json

What is here, top to bottom:
  1. config and size presets        4. the hand-written log-prob       7. checkpoints (atomic, checked)
  2. tokenizer and chat format      5. sampling with a KV cache         8. small helpers the scripts share
  3. the model (attention by hand)  6. FLOPs / MFU

The parameter names follow Hugging Face's GPT-2 (transformer.wte, .wpe, .h.N.ln_1, .attn.c_attn, .attn.c_proj,
.ln_2, .mlp.c_fc, .mlp.c_proj, .ln_f, lm_head tied to wte), so a GPT-2 state dict could be mapped onto it
(HF stores Conv1D weights transposed; transpose them when loading).
"""

import copy
import hashlib
import json
import math
import os
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = os.path.dirname(os.path.abspath(__file__))

# ---------------------------------------------------------------------------------------------------------
# 1. Config and presets
# ---------------------------------------------------------------------------------------------------------


@dataclass
class GPTConfig:
    vocab_size: int = 3000
    block_size: int = 256  # longest sequence (prompt + response) the model sees
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 192
    dropout: float = 0.0
    scalar_head: bool = False  # True for the reward model and the value model: one number per position


# Model shapes per preset. Training hyper-parameters live in each stage script's own config.
# cpu: 2.0M parameters; pretraining takes ~50 minutes on 2 cores in fp32, less with fast bf16 (README).
# gpu: ~30M parameters for one 24 GB GPU (bf16 autocast); exercised on CPU for one step by the tests.
MODEL_PRESETS = {
    "test": dict(block_size=256, n_layer=2, n_head=2, n_embd=32),
    "cpu": dict(block_size=256, n_layer=4, n_head=4, n_embd=192),
    "gpu": dict(block_size=512, n_layer=8, n_head=8, n_embd=512),
}
PRESETS = tuple(MODEL_PRESETS)

# ---------------------------------------------------------------------------------------------------------
# 2. Tokenizer and the chat format
# ---------------------------------------------------------------------------------------------------------
# A byte-level BPE trained on the corpus by data/bpe.py and loaded as a tiktoken.Encoding. Three special
# tokens: documents end with <|endoftext|>; an instruction is "<|user|>{prompt}<|assistant|> {response}<|endoftext|>".
# The corpus never contains <|user|> or <|assistant|>: the chat format is something only SFT teaches.

EOT, USER, ASSISTANT = "<|endoftext|>", "<|user|>", "<|assistant|>"


def data_dir(preset):
    return os.path.join(ROOT, "data", preset)


def load_tokenizer(preset):
    """The preset's tiktoken.Encoding, built from data/<preset>/tokenizer.bpe."""
    from data.bpe import encoding, load_ranks

    path = os.path.join(data_dir(preset), "tokenizer.bpe")
    if not os.path.exists(path):
        die(f"{os.path.relpath(path)} not found: run `python data/world.py --preset {preset}` first")
    enc = encoding(load_ranks(path))
    enc.tokenizer_id = tokenizer_id(path)  # stored in every checkpoint and checked on load
    return enc


def tokenizer_id(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()[:16]


def encode_prompt(enc, prompt):
    """Token ids of "<|user|>{prompt}<|assistant|>": what the policy is conditioned on."""
    return [enc.encode_single_token(USER)] + enc.encode_ordinary(prompt) + [enc.encode_single_token(ASSISTANT)]


def encode_response(enc, response):
    """Token ids of " {response}<|endoftext|>": what the policy writes, EOT included (it decides when to stop).

    The response begins with a space, as every word but a line's first does in the corpus: BPE words carry their
    leading space (" fox", " FOX"), and without it an answer's first word would be other tokens ("f", "ox") than
    the same word in the prompt, so copying it (a rewrite, a list) would be a skill of its own. decode() drops it.
    """
    return enc.encode_ordinary(" " + response) + [enc.eot_token]


def encode_chat(enc, prompt, response):
    """Token ids of a whole conversation, and how many of them are the prompt (whose loss SFT masks)."""
    p = encode_prompt(enc, prompt)
    return p + encode_response(enc, response), len(p)


def decode(enc, ids):
    """Text of a response, stopping at the first <|endoftext|>, without the space it begins with (encode_response)."""
    ids = list(ids)
    if enc.eot_token in ids:
        ids = ids[: ids.index(enc.eot_token)]
    text = enc.decode(ids)
    return text[1:] if text.startswith(" ") else text


# ---------------------------------------------------------------------------------------------------------
# 3. The model
# ---------------------------------------------------------------------------------------------------------


def attention(q, k, v, key_mask=None, dropout_p=0.0, training=False):
    """Causal scaled dot-product attention, written out (Vaswani et al. 2017, eq. 1).

    q: (B, nh, Tq, hs) queries for the LAST Tq positions of a sequence whose keys/values k, v are (B, nh, Tk, hs),
    Tk >= Tq (Tk > Tq when a KV cache holds earlier positions). key_mask: (B, Tk) bool, False at padding keys.
    """
    Tq, Tk, hs = q.size(-2), k.size(-2), q.size(-1)
    att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (B, nh, Tq, Tk) scores Q·Kᵀ/√d
    # causal mask: query i (absolute position Tk-Tq+i) may look at keys j <= Tk-Tq+i
    causal = torch.ones(Tq, Tk, dtype=torch.bool, device=q.device).tril(diagonal=Tk - Tq)  # (Tq, Tk)
    allowed = causal if key_mask is None else causal & key_mask[:, None, None, :]  # (B, 1, Tq, Tk)
    att = att.masked_fill(~allowed, float("-inf"))
    att = torch.softmax(att, dim=-1)
    att = torch.nan_to_num(att)  # a query with no allowed key at all (a padding query) gets zeros, not NaNs
    att = F.dropout(att, p=dropout_p, training=training)
    return att @ v  # (B, nh, Tq, hs)


def allowed_keys(key_mask, Tq, Tk, device):
    """Which keys each of the last Tq queries may attend to: (Tq, Tk) causal, or (B, 1, Tq, Tk) with padding keys
    (key_mask False) removed too; a padding query left with no key attends everywhere (its output is never read,
    and a row of −inf would give NaN). The fused paths (attention_fast, sdpa) share it."""
    allowed = torch.ones(Tq, Tk, dtype=torch.bool, device=device).tril(diagonal=Tk - Tq)  # (Tq, Tk) causal
    if key_mask is not None:
        allowed = allowed & key_mask[:, None, None, :]  # (B, 1, Tq, Tk)
        allowed = allowed | ~allowed.any(-1, keepdim=True)  # padding queries: attend anywhere
    return allowed


# The mask as an additive bias, kept for the next call: every layer of one forward pass asks for the same one.
# Building it once instead of in every layer took bench.py's KV-cache row (4 prompts, 128 new tokens) from 3.7x
# to 4.7x.
_BIAS = {}


def attention_bias(key_mask, B, nh, Tq, Tk, dtype, device):
    """allowed_keys as an additive bias, 0 where a query may look and −inf where it may not: (Tq, Tk), or
    (B·nh, Tq, Tk) with a key_mask. Built once per mask: the cache holds the key_mask tensor itself and is used
    only for that same object."""
    args = (B, nh, Tq, Tk, dtype, device)
    if _BIAS.get("key_mask", False) is key_mask and _BIAS.get("args") == args:
        return _BIAS["bias"]
    allowed = allowed_keys(key_mask, Tq, Tk, device)  # (Tq, Tk) or (B, 1, Tq, Tk)
    bias = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill(~allowed, float("-inf"))
    bias = bias.expand(B, nh, Tq, Tk).reshape(-1, Tq, Tk) if key_mask is not None else bias  # (B·nh | 1, Tq, Tk)
    _BIAS.update(key_mask=key_mask, args=args, bias=bias)
    return bias


def attention_fast(q, k, v, key_mask=None):
    """attention() above in three fused ops, the fast path on a CPU with native bf16: the mask is added as a bias
    of 0 or −inf inside the first matmul (baddbmm: bias + α·Q·Kᵀ). Shapes as in attention().

    Why not torch's fused SDPA on CPU: in bf16 its flash-attention backward runs ~10x its forward at our head size
    (hs = 48; README, "Faster attention, exact GELU"); in bf16 this path trains the cpu preset 1.2x as fast at
    T = 256 and 1.6x at SFT's T = 48 (bench.py; in fp32 0.9x and 1.0x, so default_attention_impl keeps SDPA on a
    CPU without native bf16). tests/test_model.py checks it against attention().
    """
    B, nh, Tq, hs = q.shape
    Tk = k.size(-2)
    bias = attention_bias(key_mask, B, nh, Tq, Tk, q.dtype, q.device)
    att = torch.baddbmm(bias, q.reshape(-1, Tq, hs), k.reshape(-1, Tk, hs).transpose(1, 2), alpha=1 / math.sqrt(hs))
    att = torch.softmax(att, dim=-1)  # (B·nh, Tq, Tk)
    return (att @ v.reshape(-1, Tk, hs)).view(B, nh, Tq, hs)


# Which attention runs: "readable" (attention(), above), "fast" (attention_fast(): the same math in fused ops,
# the default on a CPU with native bf16), "sdpa" (torch's fused kernel) or "triton" (our flash-attention kernel in
# kernels.py, CUDA only). set_attention_impl() changes it; tests compare them.
ATTN_IMPL = "readable"


def set_attention_impl(name):
    global ATTN_IMPL
    assert name in ("readable", "fast", "sdpa", "triton"), name
    ATTN_IMPL = name


def default_attention_impl(device):
    """triton flash attention on CUDA when importable (else torch's SDPA). On CPU, attention_fast where the CPU has
    native bf16 (in bf16 it trains 1.2x as fast as SDPA at T = 256 and 1.6x at SFT's 48: bench.py), SDPA where it
    has not (in fp32 SDPA is 1.1x as fast at T = 256). USE_KERNELS = False turns the Triton kernels off here too."""
    if not str(device).startswith("cuda"):
        return "fast" if native_bf16(device) else "sdpa"
    if USE_KERNELS:
        try:
            import kernels

            if kernels.HAVE_TRITON:
                return "triton"
        except ImportError:
            pass
    return "sdpa"


class CausalSelfAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        assert cfg.n_embd % cfg.n_head == 0
        self.n_head = cfg.n_head
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)  # Q, K, V projections in one matmul
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)  # heads concatenated, then projected
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x, key_mask=None, cache=None):
        B, T, C = x.size()
        nh, hs = self.n_head, C // self.n_head
        q, k, v = self.c_attn(x).split(C, dim=2)  # 3 x (B, T, C)
        q = q.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        k = k.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        v = v.view(B, T, nh, hs).transpose(1, 2)  # (B, nh, T, hs)
        if cache is not None:  # generation: append this step's keys/values to the ones already computed
            k, v = cache.append(self, k, v)  # (B, nh, T_past + T, hs)
        # Dropout on the residual stream only ("residual dropout", as the paper's SFT); none on the attention
        # probabilities, which would also force torch's slower attention path on CPU (and the Triton kernel
        # has none).
        if ATTN_IMPL == "triton" and key_mask is None and cache is None:
            import kernels

            y = kernels.flash_attention(q, k, v)
        elif ATTN_IMPL == "readable":
            y = attention(q, k, v, key_mask)
        elif ATTN_IMPL == "fast":
            y = attention_fast(q, k, v, key_mask)
        else:  # sdpa: the same math fused by torch; masks are passed as one boolean (B, 1, Tq, Tk) tensor
            Tk = k.size(-2)
            if key_mask is None and T == Tk:
                y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
            elif T == 1 and key_mask is not None:  # one new token (cached decoding): every real key is in its past
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :])
            else:
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=allowed_keys(key_mask, T, Tk, x.device))
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # (B, T, C) heads side by side
        return self.resid_dropout(self.c_proj(y))


class MLP(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x):
        # GELU (Hendrycks & Gimpel 2016) exactly, via erf, as nanoGPT's nn.GELU(); GPT-2's tanh approximation
        # of it runs 2.4x as long on CPU in bf16 (forward + backward; README, "Faster attention, exact GELU").
        return self.dropout(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-LayerNorm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, cfg):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = CausalSelfAttention(cfg)
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(self, x, key_mask=None, cache=None):
        x = x + self.attn(self.ln_1(x), key_mask, cache)
        return x + self.mlp(self.ln_2(x))


class GPT(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.transformer = nn.ModuleDict(
            dict(
                wte=nn.Embedding(cfg.vocab_size, cfg.n_embd),  # token embeddings
                wpe=nn.Embedding(cfg.block_size, cfg.n_embd),  # learned position embeddings
                drop=nn.Dropout(cfg.dropout),
                h=nn.ModuleList([Block(cfg) for _ in range(cfg.n_layer)]),
                ln_f=nn.LayerNorm(cfg.n_embd),
            )
        )
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.lm_head.weight = self.transformer.wte.weight  # weight tying (Press & Wolf 2017), as GPT-2
        # GPT-2 init: N(0, 0.02), residual projections scaled by 1/sqrt(2 * n_layer)
        self.apply(self._init_weights)
        for name, p in self.named_parameters():
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))
        if cfg.scalar_head:  # reward / value head: N(0, 1/sqrt(d+1)), bias 0 (Stiennon et al. 2020 detail)
            self.score_head = nn.Linear(cfg.n_embd, 1)
            nn.init.normal_(self.score_head.weight, std=1 / math.sqrt(cfg.n_embd + 1))
            nn.init.zeros_(self.score_head.bias)
            # α of the reward model's log-likelihood term (see reward_from_ids); 0 is the paper's RM, and reward.py
            # sets it (a fixed hyperparameter). The value model inherits it from the RM and never uses it.
            self.score_loglik = nn.Parameter(torch.zeros(()))

    def _init_weights(self, m):
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, mean=0.0, std=0.02)

    def num_params(self):
        n = sum(p.numel() for p in self.parameters())
        return n - self.transformer.wpe.weight.numel()  # as nanoGPT: position embeddings not counted

    def forward(self, idx, pos=None, key_mask=None, cache=None):
        """Final hidden states (B, T, C) after ln_f. idx: (B, T) token ids.

        pos: (B, T) position ids (default 0..T-1; left-padded generation passes its own),
        key_mask: (B, T_total) bool, False at padding, cache: a KVCache during generation.
        """
        B, T = idx.size()
        if pos is None:
            pos = torch.arange(T, device=idx.device).expand(B, T)
        assert pos.max() < self.cfg.block_size, f"sequence longer than block_size {self.cfg.block_size}"
        x = self.transformer.drop(self.transformer.wte(idx) + self.transformer.wpe(pos))  # (B, T, C)
        for block in self.transformer.h:
            x = block(x, key_mask, cache)
        if cache is not None:
            cache.length += T
        return self.transformer.ln_f(x)  # (B, T, C)

    def logits(self, h):
        with full_precision(h):  # the heads stay fp32 under bf16 autocast (section 8, "mixed precision")
            return self.lm_head(h)  # (B, T, V)

    def logprobs(self, idx, targets, temperature=1.0):
        """log π(targets[t] | idx[:t+1]) for every position: (B, T). See token_logprobs."""
        return token_logprobs(self(idx) / temperature, self.lm_head.weight, targets)

    def logprobs_at(self, idx, targets, mask):
        """log π(targets[mask] | ...) at the masked positions only: (N,), N = mask.sum(). Equals
        logprobs(idx, targets)[mask], but the output head (C x V, a quarter of the FLOPs at the cpu preset)
        runs only where the loss looks: SFT's prompt and padding positions are about two thirds of a batch."""
        h = self(idx)  # (B, T, C)
        return token_logprobs(h[mask], self.lm_head.weight, targets[mask])  # (N,)

    def score(self, h):
        """The scalar head on hidden states h (..., C) -> (...), in fp32 like the output head."""
        with full_precision(h):
            return self.score_head(h).squeeze(-1)

    def scores(self, idx):
        """The scalar head read at every position: (B, T). Reward model r_θ and value model V."""
        return self.score(self(idx))


# ---------------------------------------------------------------------------------------------------------
# 4. Log-probabilities of the tokens actually in a sequence
# ---------------------------------------------------------------------------------------------------------
# Every stage needs log π(y_t | x, y_<t) for the tokens y_t that are there, never the whole distribution.
# log_softmax(z)[y] = z[y] - logsumexp(z): one gather and one reduction, no (B, T, V) log_softmax copy.


def token_logprobs_readable(logits, targets):
    """logits: (..., V), targets: (...) -> (...). The formula, nothing else."""
    picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (...) z[y]
    return picked - torch.logsumexp(logits, dim=-1)  # (...) z[y] - log Σ_v exp z[v]


# Use the fused / chunked versions in kernels.py (the same math, less memory). set False to read the math.
USE_KERNELS = True


def token_logprobs(h, weight, targets):
    """log softmax(h @ weightᵀ)[targets]: h (..., C), weight (V, C), targets (...) -> (...).

    Fast path (kernels.linear_logprob): computes the logits chunk by chunk and recomputes them in the
    backward pass, so neither the (B, T, V) logits nor their softmax is ever stored.
    Always in fp32, even inside a bf16 autocast region (see autocast() in section 8): PPO's ratio and KL are
    differences of these numbers, and a bf16 logit near 10 is rounded to a multiple of 1/16.
    """
    with full_precision(h):
        if USE_KERNELS:
            import kernels

            shape = targets.shape
            out = kernels.linear_logprob(h.reshape(-1, h.size(-1)), weight, targets.reshape(-1))
            return out.view(shape)
        return token_logprobs_readable(h @ weight.t(), targets)


# ---------------------------------------------------------------------------------------------------------
# 5. Sampling with a KV cache
# ---------------------------------------------------------------------------------------------------------
# Prompts of different lengths share a batch by LEFT padding: every prompt ends at the same column, so each
# step appends one column for all rows. Padding keys are masked out and each row's position ids start at 0
# at its first real token, so a padded row computes exactly what it would alone.


class KVCache:
    """Keys and values of every layer for the positions generated so far, preallocated: (B, nh, T_max, hs)."""

    def __init__(self, model, B, T_max, device, dtype):
        cfg = model.cfg
        hs = cfg.n_embd // cfg.n_head
        self.k = {id(b.attn): torch.zeros(B, cfg.n_head, T_max, hs, device=device, dtype=dtype) for b in model.transformer.h}
        self.v = {key: torch.zeros_like(t) for key, t in self.k.items()}
        self.length = 0  # positions filled (advanced by GPT.forward after all layers have appended)

    def append(self, attn, k, v):
        key, T = id(attn), k.size(2)
        self.k[key][:, :, self.length : self.length + T] = k
        self.v[key][:, :, self.length : self.length + T] = v
        return self.k[key][:, :, : self.length + T], self.v[key][:, :, : self.length + T]

    def keep(self, rows):
        """Drop finished rows so no more compute is spent on them. rows: (B',) indices to keep."""
        self.k = {key: t[rows] for key, t in self.k.items()}
        self.v = {key: t[rows] for key, t in self.v.items()}


def left_pad(seqs, pad_id, device):
    """list of id lists -> idx (B, T) left-padded, key_mask (B, T) bool, pos (B, T) per-row positions."""
    T = max(len(s) for s in seqs)
    idx = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(seqs), T, dtype=torch.bool)
    for i, s in enumerate(seqs):
        idx[i, T - len(s) :] = torch.tensor(s, dtype=torch.long)
        mask[i, T - len(s) :] = True
    pos = (mask.long().cumsum(1) - 1).clamp(min=0)
    return idx.to(device), mask.to(device), pos.to(device)


def sample_next(logits, temperature, top_k, generator):
    """logits (B, V) -> next token ids (B,). temperature 0 = greedy."""
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k:
        kth = torch.topk(logits, min(top_k, logits.size(-1)), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


@torch.no_grad()
def generate(model, prompts, max_new_tokens, temperature=1.0, top_k=0, generator=None, eot=None):
    """Sample a response for each prompt (a list of token-id lists), with a KV cache.

    Returns a list of response token lists; a response that ended includes its final <|endoftext|>.
    Rows that have finished are dropped from the batch once a quarter of them are done (dropping a row copies
    the whole cache, so doing it for every single row would cost more than it saves).
    """
    device = next(model.parameters()).device
    assert eot is not None, "pass eot=enc.eot_token"
    idx, mask, pos = left_pad(prompts, eot, device)
    B, T0 = idx.shape
    T_max = min(T0 + max_new_tokens, model.cfg.block_size)
    cache = KVCache(model, B, T_max, device, next(model.parameters()).dtype)
    out = [[] for _ in range(B)]
    alive = torch.arange(B, device=device)  # which original rows are still in the batch
    finished = torch.zeros(B, dtype=torch.bool, device=device)  # rows in the batch that have emitted EOT
    h = model(idx, pos, mask, cache)[:, -1]  # (B, C) prefill: the whole prompt in one pass
    next_pos = pos[:, -1] + 1  # (B,)
    n_new = T_max - T0
    for step in range(n_new):
        tok = sample_next(model.logits(h), temperature, top_k, generator)  # (B',)
        for r, t, f in zip(alive.tolist(), tok.tolist(), finished.tolist()):
            if not f:  # a finished row's later tokens are computed but thrown away
                out[r].append(t)
        finished |= tok == eot
        if step == n_new - 1 or finished.all():
            break
        if 4 * finished.sum() >= len(alive):  # compact: keep only unfinished rows in the batch and the cache
            keep = (~finished).nonzero().squeeze(-1)
            alive, tok, mask, next_pos, finished = alive[keep], tok[keep], mask[keep], next_pos[keep], finished[keep]
            cache.keep(keep)
        mask = torch.cat([mask, torch.ones(len(alive), 1, dtype=torch.bool, device=device)], 1)
        h = model(tok[:, None], next_pos[:, None], mask, cache)[:, -1]  # (B', C) one new position
        next_pos = next_pos + 1
    return out


@torch.no_grad()
def respond(model, enc, prompts, max_new_tokens, temperature=0.0, top_k=0, generator=None, batch_size=64):
    """Responses (token-id lists, EOT included when it was emitted) to a list of prompt strings.

    Prompts are batched by length (less padding); the answers come back in the order of the prompts.
    """
    was_training = model.training
    model.eval()
    ids = [encode_prompt(enc, p) for p in prompts]
    order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
    out = [None] * len(ids)
    for s in range(0, len(order), batch_size):
        rows = order[s : s + batch_size]
        for i, r in zip(rows, generate(model, [ids[i] for i in rows], max_new_tokens, temperature, top_k,
                                       generator, eot=enc.eot_token)):
            out[i] = r
    model.train(was_training)
    return out


def right_pad(seqs, pad_id, device):
    """list of id lists -> idx (B, T) right-padded, lengths (B,). With causal attention, padding placed AFTER
    the real tokens cannot change them, so training and scoring need no attention mask."""
    T = max(len(s) for s in seqs)
    idx = torch.full((len(seqs), T), pad_id, dtype=torch.long)
    for i, s in enumerate(seqs):
        idx[i, : len(s)] = torch.tensor(s, dtype=torch.long)
    return idx.to(device), torch.tensor([len(s) for s in seqs], device=device)


def target_mask(T, start, end, device):
    """Which next-token targets ids[:, 1:] of a (B, T) batch lie in [start, end) of their row: (B, T-1) bool.

    start, end: (B,) or ints, positions in the sequence (e.g. the prompt length and the real length), so the
    mask picks the response tokens whose log-probs SFT, PPO and evaluation count.
    """
    t = torch.arange(1, T, device=device)[None, :]  # (1, T-1) position of each target token
    start = torch.as_tensor(start, device=device).reshape(-1, 1)
    end = torch.as_tensor(end, device=device).reshape(-1, 1)
    return (t >= start) & (t < end)


def reward_parts(rm, ids, resp_mask):
    """The two parts of r_θ(x, y) (see reward_from_ids), each (B,): the head read at the final token, w·h_EOT + b,
    and the RM's own log-likelihood of the response, Σ_t log p_θ(y_t | x, y_<t)."""
    h = rm(ids)  # (B, T, C)
    B = ids.size(0)
    last = (resp_mask * torch.arange(resp_mask.size(1), device=ids.device)).argmax(1) + 1  # (B,) the final token
    head = rm.score(h[torch.arange(B, device=ids.device), last])  # (B,)
    # log p_θ(y|x): the output head only at the response positions (as GPT.logprobs_at; prompts are most of a row)
    on = resp_mask.bool()  # (B, T-1)
    lp = token_logprobs(h[:, :-1][on], rm.lm_head.weight, ids[:, 1:][on])  # (N,) in row order
    loglik = torch.zeros(B, device=ids.device, dtype=lp.dtype).index_add(0, on.nonzero()[:, 0], lp)  # (B,)
    return head, loglik


def reward_from_ids(rm, ids, resp_mask):
    """r_θ(x, y) for right-padded prompt+response sequences ids (B, T); resp_mask (B, T-1) marks the positions j
    whose target ids[:, j+1] is a response token (the last of them is the final <|endoftext|>):

        r_θ(x, y) = w·h_EOT + b  +  α · Σ_t log p_θ(y_t | x, y_<t)

    The first part is the paper's RM: a scalar head read at the final token. The second is the RM's own language
    model (it keeps the SFT model's unembedding) scoring the response, weighted by α (rm.score_loglik, fixed by
    reward.py). Why: a 2M-parameter RM trained on 1.6k prompts does not learn to read out the facts its body
    knows (right vs wrong fact: 0.54 without this term), while the body's log-likelihood ranks the right fact
    first on 94% of the probe pairs (reward.py's docstring, deviation 5; its probe table shows both parts).
    """
    head, loglik = reward_parts(rm, ids, resp_mask)
    return head + rm.score_loglik * loglik


def reward_scores(rm, enc, prompts_and_responses, device, parts=False):
    """r_θ(x, y) for a list of (prompt, response) strings (see reward_from_ids); with parts=True, its two parts
    (head, log-likelihood) instead (reward_parts).

    Sequences are right-padded, so padding comes after the EOT and (causal attention) cannot change it. Used by
    reward.py (training, eq. 1), evaluate.py and chat.py; ppo.py calls reward_from_ids on its rollouts.
    """
    pairs = [encode_chat(enc, x, y) for x, y in prompts_and_responses]
    idx, lengths = right_pad([ids for ids, _ in pairs], enc.eot_token, device)  # (B, T), (B,)
    starts = torch.tensor([start for _, start in pairs], device=device)
    mask = target_mask(idx.size(1), starts, lengths, device).float()  # (B, T-1)
    return reward_parts(rm, idx, mask) if parts else reward_from_ids(rm, idx, mask)  # (B,)


@torch.no_grad()
def generate_nocache(model, prompts, max_new_tokens, eot):
    """Greedy decoding that recomputes the whole sequence each step, one prompt at a time: the reference the
    KV-cache path is tested against (and the baseline bench.py measures it against)."""
    device = next(model.parameters()).device
    outs = []
    for p in prompts:
        seq = list(p)
        for _ in range(min(max_new_tokens, model.cfg.block_size - len(p))):
            h = model(torch.tensor([seq], device=device))[:, -1]
            t = int(model.logits(h).argmax(-1))
            seq.append(t)
            if t == eot:
                break
        outs.append(seq[len(p) :])
    return outs


# ---------------------------------------------------------------------------------------------------------
# 6. FLOPs and model FLOPs utilisation
# ---------------------------------------------------------------------------------------------------------


def flops_per_token(cfg, n_params, T):
    """Training FLOPs per token: 6N for the weights plus 12·L·C·T for attention (PaLM, Chowdhery et al. 2022,
    appendix B). N excludes the embeddings' lookup but includes the (tied) output head matmul."""
    return 6 * n_params + 12 * cfg.n_layer * cfg.n_embd * T


def measure_matmul_flops(n=1024, reps=10, dtype=torch.float32):
    """This machine's matmul peak in dtype (fp32; bf16 when training runs in bf16), FLOP/s, measured (the
    denominator of MFU)."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(2):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * n**3 * reps / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------------------
# 7. Checkpoints: atomic writes, config and tokenizer inside, checked on load
# ---------------------------------------------------------------------------------------------------------


def die(msg):
    """Stop with one clear line (no traceback) that says what to do."""
    raise SystemExit(f"error: {msg}")


def save_checkpoint(path, model, preset, stage, tokenizer_id, extra=None):
    """Write {model, config, tokenizer, preset, stage, extra} to path atomically: temp file, then rename."""
    ckpt = dict(
        model=model.state_dict(),
        config=asdict(model.cfg),
        tokenizer=tokenizer_id,
        preset=preset,
        stage=stage,
        extra=extra or {},
    )
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    torch.save(ckpt, tmp)
    os.replace(tmp, path)  # atomic on POSIX: readers see the old file or the new one, never half of one


def load_checkpoint(path, run_hint, tokenizer_id=None, device="cpu", scalar_head=None, dropout=None):
    """Load a checkpoint into a fresh GPT. run_hint: the command that makes the file, named in the error.

    dropout: None keeps the checkpoint's; a number sets it for the stage that continues training (SFT uses
    dropout; RL turns it off everywhere).
    scalar_head: None keeps the checkpoint's head; True/False converts (an LM checkpoint becomes the
    initialisation of a reward model: the body is kept and a new scalar head is added).
    """
    if not os.path.exists(path):
        die(f"{path} not found: run `{run_hint}` first")
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)
        cfg = GPTConfig(**ckpt["config"])
    except Exception as e:  # truncated, corrupt, or not ours
        die(f"{path} is not a readable checkpoint ({type(e).__name__}): delete it and run `{run_hint}` again")
    if tokenizer_id is not None and ckpt["tokenizer"] != tokenizer_id:
        die(f"{path} was trained with another tokenizer ({ckpt['tokenizer']} != {tokenizer_id}): "
            f"the world in data/{ckpt['preset']} was regenerated; run `{run_hint}` again")
    if dropout is not None:
        cfg.dropout = dropout
    state = ckpt["model"]
    converted = scalar_head is not None and scalar_head != cfg.scalar_head
    if converted:
        cfg.scalar_head = scalar_head
        state = {k: v for k, v in state.items() if not k.startswith("score_")}
    model = GPT(cfg).to(device)
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not (converted and k.startswith("score_"))]
    if missing or unexpected:
        die(f"{path} does not match its config (missing {missing[:3]}, unexpected {unexpected[:3]}): run `{run_hint}` again")
    return model, ckpt


# ---------------------------------------------------------------------------------------------------------
# 8. Small helpers the stage scripts share
# ---------------------------------------------------------------------------------------------------------


def round_file(name, round_):
    """Iterated RLHF keeps each round's reward model apart: round 1 writes rm.pt and reward_metrics.json, round 2
    rm_round2.pt and reward_metrics_round2.json, and so on, so that running a round again reads the round before
    it, never its own output."""
    if round_ <= 1:
        return name
    stem, ext = os.path.splitext(name)
    return f"{stem}_round{round_}{ext}"


def borrow(out, preset, files):
    """For experiments in their own --out dir: link the files a stage needs from out/<preset> when they are not
    there yet (e.g. `ppo.py --kl-coef 0 --out out/cpu-nokl` reuses the default run's sft.pt and rm.pt). A stage
    that writes one of them replaces the link, never the original."""
    src = os.path.join("out", preset)
    if os.path.abspath(out) == os.path.abspath(src):
        return
    os.makedirs(out, exist_ok=True)
    for f in files:
        if not os.path.exists(os.path.join(out, f)) and os.path.exists(os.path.join(src, f)):
            os.symlink(os.path.abspath(os.path.join(src, f)), os.path.join(out, f))


def get_device(name="auto"):
    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        die("--device cuda asked for, but torch sees no GPU: use --device cpu")
    return name


def set_seed(seed):
    torch.manual_seed(seed)


# Mixed precision. The training forward passes (pretrain, SFT, RM training, PPO's rollout log-probs and updates)
# can run the transformer body's matmuls and attention in bf16. Weights, gradients, AdamW state, layer norms, the
# residual stream, the output head with its log-softmax, and the scalar heads stay fp32 (full_precision below).
# Sampling and every evaluation run in fp32. "auto" chooses bf16 only where it pays, and measures that: a CPU that
# reports AVX512-BF16 does not promise fast bf16 matmuls. On two machines here, both reporting it, bench.py
# measured a bf16 matmul at 2.0x fp32 (358 against 176 GFLOP/s; pretraining 8.3k against 6.4k tok/s) and at 0.44x
# (116 against 265 GFLOP/s; pretraining 5.8k against 8.3k tok/s). The same seed gives the same numbers on one
# machine in one precision, not across precisions: each stage prints the one it chose.
BF16 = False
_BF16_SPEEDUP = {}


def native_bf16(device):
    if str(device).startswith("cuda"):
        return True
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def bf16_speedup(device, n=1024, reps=4):
    """How many times faster a bf16 (n x n) matmul runs than an fp32 one here (best of reps; ~0.1 s, once per
    process). 0 where bf16 is not native (it would be emulated). Its matrix comes from the global RNG after the
    stage's set_seed, so the measurement is part of each stage's random stream, the same in every run (the
    pipeline tests clear the cache before each stage, as a fresh process starts without it)."""
    if not native_bf16(device):
        return 0.0
    key = str(device)
    if key not in _BF16_SPEEDUP:
        a = torch.randn(n, n, device=device)

        def best(dtype):
            x = a.to(dtype)
            x @ x  # warm-up
            times = []
            for _ in range(reps):
                if key.startswith("cuda"):
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                x @ x
                if key.startswith("cuda"):
                    torch.cuda.synchronize()
                times.append(time.perf_counter() - t0)
            return min(times)

        _BF16_SPEEDUP[key] = best(torch.float32) / best(torch.bfloat16)
    return _BF16_SPEEDUP[key]


def auto_bf16(device, min_speedup=1.3):
    """What --precision auto chooses: bf16 where its matmuls run >= min_speedup x fp32 here. The margin keeps the
    choice stable from run to run: the two machines above sit far on either side of it."""
    return bf16_speedup(device) >= min_speedup


def set_precision(name, device):
    """name: "auto" (auto_bf16), "bf16" or "fp32". Prints the choice."""
    global BF16
    if name == "bf16" and not native_bf16(device):
        die(f"--precision bf16 asked for, but this {device} has no native bf16 matmul: use --precision fp32")
    speedup = bf16_speedup(device) if name == "auto" else None
    BF16 = name == "bf16" or (name == "auto" and auto_bf16(device))
    why = "" if speedup is None else (f" (auto: a bf16 matmul runs at {speedup:.2f}x fp32 here)" if speedup > 0
                                      else f" (auto: this {device} has no native bf16 matmul)")
    print(f"precision: {'bf16 autocast' if BF16 else 'fp32'}{why}")


def autocast(device):
    """The context the stages wrap their training forward passes in (bf16 if set_precision chose it)."""
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16, enabled=BF16)


def full_precision(x):
    """Autocast off, for the heads: inside it, matmuls run in the dtype of their inputs (fp32)."""
    return torch.autocast(x.device.type, enabled=False)


def corpus_batches(preset, enc, B, T, seed):
    """Endless random windows (B, T+1) of the pretraining corpus: for PPO-ptx and SFT's corpus replay."""
    path = os.path.join(data_dir(preset), "corpus.txt")
    if not os.path.exists(path):
        die(f"{path} not found: run `python data/world.py --preset {preset}` first")
    with open(path, encoding="utf-8") as f:
        tokens = torch.tensor(enc.encode(f.read(), allowed_special={EOT}))
    g = torch.Generator().manual_seed(seed)
    while True:
        starts = torch.randint(0, len(tokens) - T - 1, (B,), generator=g)
        yield torch.stack([tokens[s : s + T + 1] for s in starts])


def read_jsonl(path, preset):
    if not os.path.exists(path):
        die(f"{os.path.relpath(path)} not found: run `python data/world.py --preset {preset}` first")
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def write_json(path, obj):
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2)
    os.replace(tmp, path)


def configure_optimizer(model, lr, weight_decay=0.1, betas=(0.9, 0.95)):
    """AdamW with weight decay on matrices only (embeddings and linear weights), none on biases and LayerNorm
    gains, as nanoGPT does."""
    params = [p for p in model.parameters() if p.requires_grad]
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [dict(params=decay, weight_decay=weight_decay), dict(params=no_decay, weight_decay=0.0)]
    return torch.optim.AdamW(groups, lr=lr, betas=betas)


def cosine_lr(step, total, lr, warmup=0, min_ratio=0.1):
    """Linear warmup, then cosine decay from lr to min_ratio·lr."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return lr * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


class Progress:
    """Prints a line every `every` steps: step, the caller's numbers, tokens/s and ETA."""

    def __init__(self, total, every, name):
        self.total, self.every, self.name = total, every, name
        self.t0 = time.time()
        self.tokens = 0

    def step(self, i, tokens=0, **numbers):
        self.tokens += tokens
        if i % self.every and i != self.total - 1:
            return
        dt = time.time() - self.t0
        eta = dt / (i + 1) * (self.total - i - 1)
        parts = [f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in numbers.items()]
        tps = f" | {self.tokens / max(dt, 1e-9):,.0f} tok/s" if self.tokens else ""
        print(f"[{self.name}] {i + 1}/{self.total} | " + " | ".join(parts) + f"{tps} | {dt:.0f}s, ETA {eta:.0f}s",
              flush=True)


def plot_curves(path, curves, title, xlabel="step"):
    """curves: {label: (xs, ys)} -> one PNG (Agg backend, no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (xs, ys) in curves.items():
        ax.plot(xs, ys, label=label)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def stage_args(description, training=True):
    """The flags every stage script shares: --preset, --out, --seed, --device, and --precision for the stages
    that train (evaluate.py and chat.py only sample and score, always in fp32)."""
    import argparse

    p = argparse.ArgumentParser(description=description)
    p.add_argument("--preset", default="cpu", choices=PRESETS)
    p.add_argument("--out", default=None, help="output dir (default out/<preset>)")
    p.add_argument("--seed", type=int, default=1337)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    if training:
        p.add_argument("--precision", default="auto", choices=["auto", "bf16", "fp32"],
                       help="training forward passes in bf16 autocast (auto: where bf16 matmuls measure >= 1.3x fp32)")
    return p


def override(cfg, args):
    """A copy of the preset's config, with the flags that were given overriding fields of the same name."""
    cfg = copy.deepcopy(cfg)
    for k, v in vars(args).items():
        if v is not None and hasattr(cfg, k):
            setattr(cfg, k, v)
    return cfg
