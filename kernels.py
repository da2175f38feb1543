"""
Fused versions of the two hot spots of RLHF, each written beside the readable math it replaces in model.py.

    linear_logprob(h, weight, targets)   log softmax(h @ weightᵀ)[targets], chunked over rows, any device.
                                         The (N, V) logits, their softmax and their gradient are never stored
                                         whole: the CPU path every preset uses (and the CUDA path, where each
                                         chunk goes through the Triton kernel below).
    triton_logprob(logits, targets)      Triton: log softmax(logits)[targets] in one pass over V per row
                                         (running max and sum), backward recomputes softmax - onehot.
    flash_attention(q, k, v)             Triton: causal flash attention (Dao et al. 2022, FlashAttention-2
                                         2023), forward and backward, never storing the (T, T) scores.

Why these two. Every PPO step computes log π(y_t | ...) of the sampled tokens for policy and ref (and the
pretraining mix), and the naive `log_softmax(logits).gather(...)` materialises (B, T, V) several times over:
the out-of-memory error users hit most in RLHF libraries. Attention is the other hot spot at long T.

Triton is imported LAZILY, on first use of a Triton kernel (see _triton_kernels): the stage scripts import
this file at start-up, and tests/conftest.py must set TRITON_INTERPRET=1 (Triton's CPU interpreter, for
machines without a GPU) before triton is first imported. Run the checks with:

    TRITON_INTERPRET=1 python -m pytest tests/test_kernels.py      (conftest sets it when there is no GPU)
"""

import importlib.util
import math

import torch

# Is triton installed? Checked without importing it (importing must wait until TRITON_INTERPRET is settled).
# It ships with torch's CUDA builds; on a Linux CPU machine `pip install triton` gives its interpreter.
HAVE_TRITON = importlib.util.find_spec("triton") is not None


# ---------------------------------------------------------------------------------------------------------
# 1. Chunked log-prob fused with the output head (any device)
# ---------------------------------------------------------------------------------------------------------


class LinearLogProb(torch.autograd.Function):
    """Fuses model.token_logprobs_readable(h @ weight.t(), targets) with the output head.

    The readable version (model.py, section 4) is
        logits = h @ weight.t()                                        # (N, V)  stored for backward
        picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)  # (N,)    z[y]
        return picked - torch.logsumexp(logits, dim=-1)                # (N,)    z[y] - log Σ_v exp z[v]
    and autograd then keeps the (N, V) logits and builds an (N, V) softmax and an (N, V) gradient.

    Here, per chunk of rows (chunk·V ≈ 4M floats = 16 MB, whatever V is, but >= 128 rows):
        forward:   z = h_c @ Wᵀ  (chunk, V);  out = z[y] - lse,  lse = logsumexp(z)  (only lse is kept: (N,))
        backward:  recompute z;  dz = g · (onehot(y) - exp(z - lse));  dh_c = dz @ W;  dW += dzᵀ @ h_c
    so the peak extra memory is one or two (chunk, V) blocks instead of several (N, V) tensors.
    On CUDA with Triton, the per-chunk softmax work (gather, logsumexp; exp, -onehot, ·g) is one kernel each way.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")  # backward then runs under the same autocast state as forward
    def forward(ctx, h, weight, targets, chunk, fused):
        N = h.size(0)
        dt = torch.promote_types(h.dtype, torch.float32)  # log-probs in fp32 even under bf16 (fp64 stays fp64)
        out = torch.empty(N, dtype=dt, device=h.device)
        lse = torch.empty(N, dtype=dt, device=h.device)  # logsumexp per row, saved for backward
        for s in range(0, N, chunk):
            z = h[s : s + chunk] @ weight.t()  # (chunk, V) logits of this chunk only
            y = targets[s : s + chunk]  # (chunk,)
            if fused:
                out[s : s + chunk], lse[s : s + chunk] = _logprob_fwd(z, y)
            else:
                # log_softmax is one fused pass on CPU (~3x faster here than torch.logsumexp); the logsumexp
                # the backward needs is then z[y] - log π(y), with no second pass over the row
                z_y = z.gather(1, y[:, None]).squeeze(1).to(dt)  # (chunk,) z[y]
                out[s : s + chunk] = torch.log_softmax(z.to(dt), dim=1).gather(1, y[:, None]).squeeze(1)
                lse[s : s + chunk] = z_y - out[s : s + chunk]
            del z  # freed before the next chunk's logits are made
        ctx.save_for_backward(h, weight, targets, lse)
        ctx.chunk, ctx.fused = chunk, fused
        return out

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, g):
        h, weight, targets, lse = ctx.saved_tensors
        g = g.contiguous()
        dh = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        dw = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for s in range(0, h.size(0), ctx.chunk):
            e = s + ctx.chunk
            hc = h[s:e]  # (chunk, C)
            z = hc @ weight.t()  # (chunk, V) recomputed, not stored from the forward pass
            if ctx.fused:
                dz = _logprob_bwd(z, targets[s:e], lse[s:e], g[s:e])
            else:  # d out / d z = onehot(y) - softmax(z), all in place in z's memory
                dz = z.sub_(lse[s:e, None].to(z.dtype)).exp_().neg_()  # -softmax(z) = -exp(z - lse)
                dz.scatter_add_(1, targets[s:e, None], torch.ones_like(dz[:, :1]))  # + onehot(y)
                dz.mul_(g[s:e, None].to(dz.dtype))  # (chunk, V) · upstream gradient
            dz = dz.to(weight.dtype)  # no-op in fp32; under bf16 autocast z was bf16 and dW accumulates in fp32
            if dh is not None:
                dh[s:e] = dz @ weight  # (chunk, C)
            if dw is not None:
                dw.addmm_(dz.t(), hc.to(dw.dtype))  # (V, C) summed over chunks
            del z, dz
        return dh, dw, None, None, None


def linear_logprob(h, weight, targets, chunk=None, use_triton=None):
    """h (N, C), weight (V, C), targets (N,) long -> (N,) fp32 log-probabilities of the targets.

    chunk: rows per block; default keeps one block of logits near 4M floats (16 MB in fp32) for any V, but
    takes at least 128 rows: thinner blocks make the matmuls against the (V, C) head memory-bound (and dW's
    inner dimension is the chunk), which at V = 50k cost ~1.6x the time for little memory saved.
    use_triton: per-chunk softmax work in the Triton kernels; default on CUDA when triton is installed
    (the tests force it on CPU under TRITON_INTERPRET=1).
    """
    if chunk is None:
        chunk = max(128, (1 << 22) // weight.size(0))
    if use_triton is None:
        use_triton = h.is_cuda and HAVE_TRITON
    return LinearLogProb.apply(h, weight, targets, chunk, use_triton)


# ---------------------------------------------------------------------------------------------------------
# 2. The Triton kernels, defined on first use
# ---------------------------------------------------------------------------------------------------------

_KERNELS = None


def _triton_kernels():
    """Import triton and define the @triton.jit kernels, once. Returns a dict name -> kernel.

    Lazy on purpose: `import kernels` must not import triton (see the module docstring). Each kernel is one
    "program" of a grid; tl.program_id(axis) says which block of rows this program owns.
    """
    global _KERNELS
    if _KERNELS is not None:
        return _KERNELS
    if not HAVE_TRITON:
        raise RuntimeError("triton is not installed: `pip install triton` (Linux), or use the readable paths")
    import triton
    import triton.language as tl

    # -----------------------------------------------------------------------------------------------------
    # 2a. Log-prob of the chosen token, one program per row.
    # Fuses model.token_logprobs_readable:
    #     picked = logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1)   -> one scalar load of z[y]
    #     return picked - torch.logsumexp(logits, dim=-1)                 -> the loop below: one pass over V
    # The readable logsumexp reads the row twice (max, then Σ exp); the online version (Milakov & Gimelshein
    # 2018) keeps a running max m and a running sum s = Σ exp(z - m), rescaling s whenever m grows.
    # -----------------------------------------------------------------------------------------------------
    @triton.jit
    def logprob_fwd_kernel(Z, Y, OUT, LSE, V, stride_z, BLOCK_V: tl.constexpr):
        row = tl.program_id(0)
        z_row = Z + row.to(tl.int64) * stride_z  # pointer to logits[row, 0]
        m = float("-inf")  # running max of z[:v]
        s = 0.0  # running Σ exp(z[:v] - m)
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)  # (BLOCK_V,)
            z = tl.load(z_row + cols, mask=cols < V, other=float("-inf")).to(tl.float32)
            m_new = tl.maximum(m, tl.max(z, axis=0))
            s = s * tl.exp(m - m_new) + tl.sum(tl.exp(z - m_new), axis=0)  # rescale old sum, add this block
            m = m_new
        lse = m + tl.log(s)  # logsumexp(z)
        y = tl.load(Y + row)  # the chosen token
        z_y = tl.load(z_row + y).to(tl.float32)  # z[y]: the gather
        tl.store(OUT + row, z_y - lse)  # log softmax(z)[y]
        tl.store(LSE + row, lse)  # saved: the backward needs no second reduction

    # Backward of the same lines. d(z[y] - lse)/dz[v] = onehot(y)[v] - softmax(z)[v], and softmax(z) =
    # exp(z - lse) is recomputed from the saved lse in the same pass that writes dz: it is never stored.
    # Fuses what autograd would run as: softmax (N, V), zeros + scatter for onehot, subtract, multiply by g.
    @triton.jit
    def logprob_bwd_kernel(Z, Y, LSE, G, DZ, V, stride_z, stride_dz, BLOCK_V: tl.constexpr):
        row = tl.program_id(0)
        z_row = Z + row.to(tl.int64) * stride_z
        dz_row = DZ + row.to(tl.int64) * stride_dz
        y = tl.load(Y + row)
        lse = tl.load(LSE + row)
        g = tl.load(G + row)  # upstream gradient of out[row]
        for v0 in range(0, V, BLOCK_V):
            cols = v0 + tl.arange(0, BLOCK_V)
            z = tl.load(z_row + cols, mask=cols < V, other=0.0).to(tl.float32)
            p = tl.exp(z - lse)  # softmax(z) of this block
            dz = g * (tl.where(cols == y, 1.0, 0.0) - p)  # g · (onehot(y) - softmax(z))
            tl.store(dz_row + cols, dz.to(DZ.dtype.element_ty), mask=cols < V)

    # -----------------------------------------------------------------------------------------------------
    # 2b. Causal flash attention. q, k, v, o: (B·nh, T, hs) contiguous; one program per (query block, head).
    # Fuses model.attention (key_mask=None, no dropout, Tq = Tk = T):
    #     att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)   -> s = dot(q, kᵀ) · scale, one (BM, BN) tile at a time
    #     causal = torch.ones(Tq, Tk).tril(...)             -> tl.where(key <= query, s, -inf) inside the tile;
    #     att = att.masked_fill(~allowed, float("-inf"))       tiles wholly above the diagonal are never visited
    #     att = torch.softmax(att, dim=-1)                  -> online softmax: running max m_i, running sum l_i
    #     return att @ v                                    -> acc += p @ v, rescaled when m_i grows; / l_i at end
    # The (T, T) matrix `att` never exists; per query we save only lse = m_i + log l_i for the backward.
    # -----------------------------------------------------------------------------------------------------
    @triton.jit
    def attn_fwd_kernel(Q, K, V, O, LSE, T, HS, scale,
                        BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, PREC: tl.constexpr):
        pid_m = tl.program_id(0)  # which block of queries
        bh = tl.program_id(1)  # which (batch, head)
        base = bh.to(tl.int64) * T * HS  # start of this head's (T, hs) matrices
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BM,) query positions
        offs_d = tl.arange(0, BLOCK_D)  # (BD,) head dims, BD = hs rounded up to a power of two
        d_ok = offs_d[None, :] < HS
        q = tl.load(Q + base + offs_m[:, None] * HS + offs_d[None, :], mask=(offs_m[:, None] < T) & d_ok, other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), tl.float32)  # running row max of the scores
        l_i = tl.zeros([BLOCK_M], tl.float32)  # running Σ exp(score - m_i)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)  # running Σ exp(score - m_i) · v
        hi = tl.minimum((pid_m + 1) * BLOCK_M, T)  # causal: keys after the block's last query are skipped
        for start_n in range(0, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)  # (BN,) key positions
            kv_ptrs = base + offs_n[:, None] * HS + offs_d[None, :]
            kv_mask = (offs_n[:, None] < T) & d_ok
            k = tl.load(K + kv_ptrs, mask=kv_mask, other=0.0)  # (BN, BD)
            v = tl.load(V + kv_ptrs, mask=kv_mask, other=0.0)  # (BN, BD)
            s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale  # (BM, BN) = Q·Kᵀ/√d for this tile
            allowed = (offs_n[None, :] <= offs_m[:, None]) & (offs_n[None, :] < T)  # causal & in range
            s = tl.where(allowed, s, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(s, axis=1))  # (BM,) finite: key 0 is always allowed
            alpha = tl.exp(m_i - m_new)  # rescales what was summed under the old max
            p = tl.exp(s - m_new[:, None])  # (BM, BN) unnormalised softmax of this tile
            l_i = l_i * alpha + tl.sum(p, axis=1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v, input_precision=PREC)
            m_i = m_new
        acc = acc / l_i[:, None]  # the softmax's normalisation, once at the end
        q_ok = offs_m < T
        tl.store(O + base + offs_m[:, None] * HS + offs_d[None, :], acc.to(O.dtype.element_ty),
                 mask=q_ok[:, None] & d_ok)
        tl.store(LSE + bh.to(tl.int64) * T + offs_m, m_i + tl.log(l_i), mask=q_ok)

    # Backward (FlashAttention-2, Alg. 2), with P recomputed tile by tile from the saved lse:
    #     P = exp(S - lse)          dV = Pᵀ dO          dP = dO Vᵀ
    #     dS = P ∘ (dP - Δ),  Δ_i = Σ_j P_ij dP_ij = Σ_d dO_id O_id  (computed in torch: one (B, nh, T) tensor)
    #     dQ = dS K · scale         dK = dSᵀ Q · scale
    # Two kernels so no two programs write the same rows (no atomics): one owns a key block and loops over the
    # queries that can see it (dK, dV); the other owns a query block and loops over its keys (dQ).
    @triton.jit
    def attn_bwd_dkdv_kernel(Q, K, V, DO, LSE, DELTA, DK, DV, T, HS, scale,
                             BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                             PREC: tl.constexpr):
        pid_n = tl.program_id(0)  # which block of keys
        bh = tl.program_id(1)
        base = bh.to(tl.int64) * T * HS
        offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BN,) key positions
        offs_d = tl.arange(0, BLOCK_D)
        d_ok = offs_d[None, :] < HS
        kv_ptrs = base + offs_n[:, None] * HS + offs_d[None, :]
        kv_mask = (offs_n[:, None] < T) & d_ok
        k = tl.load(K + kv_ptrs, mask=kv_mask, other=0.0)  # (BN, BD)
        v = tl.load(V + kv_ptrs, mask=kv_mask, other=0.0)
        dk = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        dv = tl.zeros([BLOCK_N, BLOCK_D], tl.float32)
        for start_m in range(pid_n * BLOCK_N, T, BLOCK_M):  # causal: earlier queries never see these keys
            offs_m = start_m + tl.arange(0, BLOCK_M)  # (BM,) query positions
            q_ok = offs_m < T
            qo_ptrs = base + offs_m[:, None] * HS + offs_d[None, :]
            q = tl.load(Q + qo_ptrs, mask=q_ok[:, None] & d_ok, other=0.0)  # (BM, BD)
            do = tl.load(DO + qo_ptrs, mask=q_ok[:, None] & d_ok, other=0.0)  # (BM, BD)
            lse = tl.load(LSE + bh.to(tl.int64) * T + offs_m, mask=q_ok, other=0.0)  # (BM,)
            delta = tl.load(DELTA + bh.to(tl.int64) * T + offs_m, mask=q_ok, other=0.0)  # (BM,)
            s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale  # (BM, BN) scores, recomputed
            allowed = (offs_n[None, :] <= offs_m[:, None]) & q_ok[:, None] & (offs_n[None, :] < T)
            p = tl.exp(tl.where(allowed, s - lse[:, None], float("-inf")))  # (BM, BN) softmax, recomputed
            dv += tl.dot(tl.trans(p.to(do.dtype)), do, input_precision=PREC)  # dV += Pᵀ dO
            dp = tl.dot(do, tl.trans(v), input_precision=PREC)  # (BM, BN) dP = dO Vᵀ
            ds = p * (dp - delta[:, None])  # (BM, BN) dS, the softmax backward
            dk += tl.dot(tl.trans(ds.to(q.dtype)), q, input_precision=PREC) * scale  # dK += dSᵀ Q · scale
        tl.store(DK + kv_ptrs, dk.to(DK.dtype.element_ty), mask=kv_mask)
        tl.store(DV + kv_ptrs, dv.to(DV.dtype.element_ty), mask=kv_mask)

    @triton.jit
    def attn_bwd_dq_kernel(Q, K, V, DO, LSE, DELTA, DQ, T, HS, scale,
                           BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr,
                           PREC: tl.constexpr):
        pid_m = tl.program_id(0)  # which block of queries
        bh = tl.program_id(1)
        base = bh.to(tl.int64) * T * HS
        offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        offs_d = tl.arange(0, BLOCK_D)
        d_ok = offs_d[None, :] < HS
        q_ok = offs_m < T
        qo_ptrs = base + offs_m[:, None] * HS + offs_d[None, :]
        q = tl.load(Q + qo_ptrs, mask=q_ok[:, None] & d_ok, other=0.0)  # (BM, BD)
        do = tl.load(DO + qo_ptrs, mask=q_ok[:, None] & d_ok, other=0.0)
        lse = tl.load(LSE + bh.to(tl.int64) * T + offs_m, mask=q_ok, other=0.0)
        delta = tl.load(DELTA + bh.to(tl.int64) * T + offs_m, mask=q_ok, other=0.0)
        dq = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        hi = tl.minimum((pid_m + 1) * BLOCK_M, T)  # causal: as in the forward pass
        for start_n in range(0, hi, BLOCK_N):
            offs_n = start_n + tl.arange(0, BLOCK_N)
            kv_ptrs = base + offs_n[:, None] * HS + offs_d[None, :]
            kv_mask = (offs_n[:, None] < T) & d_ok
            k = tl.load(K + kv_ptrs, mask=kv_mask, other=0.0)  # (BN, BD)
            v = tl.load(V + kv_ptrs, mask=kv_mask, other=0.0)
            s = tl.dot(q, tl.trans(k), input_precision=PREC) * scale  # (BM, BN)
            allowed = (offs_n[None, :] <= offs_m[:, None]) & q_ok[:, None] & (offs_n[None, :] < T)
            p = tl.exp(tl.where(allowed, s - lse[:, None], float("-inf")))  # softmax, recomputed
            dp = tl.dot(do, tl.trans(v), input_precision=PREC)  # dP = dO Vᵀ
            ds = p * (dp - delta[:, None])  # dS
            dq += tl.dot(ds.to(k.dtype), k, input_precision=PREC) * scale  # dQ += dS K · scale
        tl.store(DQ + qo_ptrs, dq.to(DQ.dtype.element_ty), mask=q_ok[:, None] & d_ok)

    _KERNELS = dict(
        triton=triton,
        logprob_fwd=logprob_fwd_kernel,
        logprob_bwd=logprob_bwd_kernel,
        attn_fwd=attn_fwd_kernel,
        attn_bwd_dkdv=attn_bwd_dkdv_kernel,
        attn_bwd_dq=attn_bwd_dq_kernel,
    )
    return _KERNELS


# ---------------------------------------------------------------------------------------------------------
# 3. Launchers and autograd Functions for the Triton kernels
# ---------------------------------------------------------------------------------------------------------


def _block_v(V, device):
    # On a GPU a program streams the row in large blocks; the interpreter runs a block as numpy arrays, so
    # smaller blocks only add Python overhead there too. Tests pass V not a multiple of the block.
    return min(4096 if device.type == "cuda" else 1024, 1 << (V - 1).bit_length())


def _logprob_fwd(z, y):
    """z (N, V) logits (row-contiguous), y (N,) -> (out (N,) fp32, lse (N,) fp32). One program per row."""
    K = _triton_kernels()
    z = z if z.stride(1) == 1 else z.contiguous()
    N, V = z.shape
    out = torch.empty(N, dtype=torch.float32, device=z.device)
    lse = torch.empty(N, dtype=torch.float32, device=z.device)
    K["logprob_fwd"][(N,)](z, y.contiguous(), out, lse, V, z.stride(0), BLOCK_V=_block_v(V, z.device))
    return out, lse


def _logprob_bwd(z, y, lse, g):
    """-> dz (N, V) = g · (onehot(y) - softmax(z)), in z's dtype."""
    K = _triton_kernels()
    z = z if z.stride(1) == 1 else z.contiguous()
    N, V = z.shape
    dz = torch.empty_like(z)
    K["logprob_bwd"][(N,)](z, y.contiguous(), lse.contiguous(), g.float().contiguous(), dz, V,
                           z.stride(0), dz.stride(0), BLOCK_V=_block_v(V, z.device))
    return dz


class TritonLogProb(torch.autograd.Function):
    """log softmax(logits)[targets] per row, fused (kernels 2a). Saves the logits (the input, which autograd
    would keep anyway) and lse (N,); never the (N, V) softmax."""

    @staticmethod
    def forward(ctx, logits, targets):
        out, lse = _logprob_fwd(logits, targets)
        ctx.save_for_backward(logits, targets, lse)
        return out

    @staticmethod
    def backward(ctx, g):
        logits, targets, lse = ctx.saved_tensors
        return _logprob_bwd(logits, targets, lse, g), None


def triton_logprob(logits, targets):
    """logits (..., V), targets (...) long -> (...) fp32 log softmax(logits)[targets]. Triton (GPU, or CPU
    under TRITON_INTERPRET=1). Same values as model.token_logprobs_readable."""
    shape = targets.shape
    out = TritonLogProb.apply(logits.reshape(-1, logits.size(-1)), targets.reshape(-1))
    return out.view(shape)


def _attn_launch_config(q):
    """Tile sizes. tl.dot needs tiles of at least 16. On a GPU, 64 for bf16/fp16 and 32 for fp32 keep every
    kernel under ~100 KB of shared memory at hs <= 64 (checked by compiling for sm_80 offline). Under the
    interpreter every program costs ~5 ms of Python, so the small test shapes use 16 (several tiles each)."""
    hs = q.size(-1)
    block = (32 if q.dtype == torch.float32 else 64) if q.is_cuda else 16
    block_d = max(16, 1 << (hs - 1).bit_length())  # hs rounded up to a power of two (48 -> 64), masked
    prec = "ieee" if q.dtype == torch.float32 else "tf32"  # fp32: exact fp32 products, as torch's matmul
    return dict(BLOCK_M=block, BLOCK_N=block, BLOCK_D=block_d, PREC=prec)


class FlashAttention(torch.autograd.Function):
    """Causal attention softmax(Q·Kᵀ/√d + causal mask) V, tiled (kernels 2b). Saves q, k, v, o and lse
    (B, nh, T): O(T) extra memory instead of the O(T²) attention matrix."""

    @staticmethod
    def forward(ctx, q, k, v):
        K = _triton_kernels()
        B, nh, T, hs = q.shape
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()  # (B, nh, T, hs) = (B·nh, T, hs) row-major
        o = torch.empty_like(q)
        lse = torch.empty(B, nh, T, dtype=torch.float32, device=q.device)
        cfg = _attn_launch_config(q)
        grid = (triton_cdiv(T, cfg["BLOCK_M"]), B * nh)
        K["attn_fwd"][grid](q, k, v, o, lse, T, hs, 1.0 / math.sqrt(hs), **cfg)
        ctx.save_for_backward(q, k, v, o, lse)
        return o

    @staticmethod
    def backward(ctx, do):
        K = _triton_kernels()
        q, k, v, o, lse = ctx.saved_tensors
        B, nh, T, hs = q.shape
        do = do.contiguous()
        delta = (do.float() * o.float()).sum(-1)  # (B, nh, T) Δ_i = Σ_d dO_id O_id = Σ_j P_ij dP_ij
        dq, dk, dv = torch.empty_like(q), torch.empty_like(k), torch.empty_like(v)
        cfg = _attn_launch_config(q)
        scale = 1.0 / math.sqrt(hs)
        K["attn_bwd_dkdv"][(triton_cdiv(T, cfg["BLOCK_N"]), B * nh)](q, k, v, do, lse, delta, dk, dv, T, hs, scale, **cfg)
        K["attn_bwd_dq"][(triton_cdiv(T, cfg["BLOCK_M"]), B * nh)](q, k, v, do, lse, delta, dq, T, hs, scale, **cfg)
        return dq, dk, dv


def triton_cdiv(a, b):
    return (a + b - 1) // b


def flash_attention(q, k, v):
    """Causal self-attention, q, k, v (B, nh, T, hs) -> (B, nh, T, hs). Same values as
    model.attention(q, k, v) without key_mask, dropout or KV cache (model.py falls back to sdpa for those)."""
    assert q.shape == k.shape == v.shape, "flash_attention: self-attention only (Tq == Tk, no KV cache)"
    return FlashAttention.apply(q, k, v)
