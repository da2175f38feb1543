"""The fused kernels compute what the readable code in model.py computes: values and gradients, fp32.

Triton kernels run under Triton's CPU interpreter here (tests/conftest.py sets TRITON_INTERPRET=1 when there
is no GPU). The interpreter costs ~5 ms per program instance, so the shapes are tiny; lengths are chosen
NOT to be multiples of the block sizes (16 for attention tiles, 1024 for the log-prob's V blocks on CPU) so
the masked edges of every tile are exercised.
"""

import os
import subprocess
import sys

import pytest
import torch

import kernels
import model as M


def _triton_importable():
    try:
        import triton  # noqa: F401  (conftest has already set TRITON_INTERPRET)

        return True
    except ImportError:
        return False


needs_triton = pytest.mark.skipif(
    not _triton_importable(),
    reason="triton cannot be imported here (`pip install triton`; Linux only): the Triton kernels are untested",
)

# fp32 throughout; the fused versions sum in a different order, nothing more
TOL = dict(atol=2e-5, rtol=1e-5)


@pytest.fixture
def attention_impl():
    """Restore model.ATTN_IMPL after a test changes it."""
    saved = M.ATTN_IMPL
    yield M.set_attention_impl
    M.set_attention_impl(saved)


def _grads(out, inputs, upstream):
    return torch.autograd.grad(out, inputs, upstream)


# ---------------------------------------------------------------------------------------------------------
# Triton log-prob (kernels 2a) vs model.token_logprobs_readable
# ---------------------------------------------------------------------------------------------------------


@needs_triton
@pytest.mark.parametrize("V", [1000, 2500])  # one partial block; two full blocks and a partial one
def test_triton_logprob_matches_readable_values_and_grads(V):
    torch.manual_seed(0)
    logits = (torch.randn(2, 3, V) * 4).requires_grad_()  # (B, T, V), scaled so softmax is far from uniform
    targets = torch.randint(0, V, (2, 3))
    targets[0, 0] = V - 1  # the last column, in the masked tail of the last block
    ours = kernels.triton_logprob(logits, targets)
    ref = M.token_logprobs_readable(logits, targets)
    torch.testing.assert_close(ours, ref, **TOL)
    g = torch.randn(2, 3)
    torch.testing.assert_close(_grads(ours, logits, g)[0], _grads(ref, logits, g)[0], **TOL)


# ---------------------------------------------------------------------------------------------------------
# Triton flash attention (kernels 2b) vs model.attention
# ---------------------------------------------------------------------------------------------------------


@needs_triton
@pytest.mark.parametrize("T,hs", [(37, 16), (5, 24), (40, 48)])  # 3 tiles; T < one tile; hs padded to 64
def test_flash_attention_matches_readable_values_and_grads(T, hs):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, T, hs, requires_grad=True) for _ in range(3))  # (B, nh, T, hs)
    ours = kernels.flash_attention(q, k, v)
    ref = M.attention(q, k, v)
    torch.testing.assert_close(ours, ref, **TOL)
    do = torch.randn_like(ref)
    for a, b in zip(_grads(ours, (q, k, v), do), _grads(ref, (q, k, v), do)):
        torch.testing.assert_close(a, b, **TOL)


@needs_triton
def test_flash_attention_accepts_the_models_strided_views():
    """model.py passes q, k, v as transposed views of one (B, T, 3C) matmul: not contiguous."""
    torch.manual_seed(0)
    B, T, nh, hs = 1, 19, 2, 16
    qkv = torch.randn(B, T, 3 * nh * hs, requires_grad=True)
    q, k, v = (t.view(B, T, nh, hs).transpose(1, 2) for t in qkv.split(nh * hs, dim=2))
    ours, ref = kernels.flash_attention(q, k, v), M.attention(q, k, v)
    torch.testing.assert_close(ours, ref, **TOL)
    do = torch.randn_like(ref)
    torch.testing.assert_close(_grads(ours, qkv, do)[0], _grads(ref, qkv, do)[0], **TOL)


@needs_triton
def test_model_with_triton_attention_matches_readable(attention_impl):
    """The whole (tiny) GPT: same log-probs and same gradient for every parameter."""
    torch.manual_seed(0)
    cfg = M.GPTConfig(**{**M.MODEL_PRESETS["test"], "block_size": 32}, vocab_size=97)  # hs = 16
    gpt = M.GPT(cfg)
    x = torch.randint(0, cfg.vocab_size, (2, 22))
    results = {}
    for impl in ("readable", "triton"):
        attention_impl(impl)
        gpt.zero_grad(set_to_none=True)
        lp = gpt.logprobs(x[:, :-1], x[:, 1:])  # (B, T)
        lp.sum().backward()
        results[impl] = (lp.detach(), {n: p.grad.clone() for n, p in gpt.named_parameters()})
    torch.testing.assert_close(results["triton"][0], results["readable"][0], **TOL)
    for name, g in results["readable"][1].items():
        torch.testing.assert_close(results["triton"][1][name], g, **TOL, msg=lambda m: f"{name}: {m}")


# ---------------------------------------------------------------------------------------------------------
# Chunked log-prob fused with the head (kernels 1) vs logits = h @ Wᵀ + token_logprobs_readable
# ---------------------------------------------------------------------------------------------------------


def _linear_logprob_case(N=23, C=12, V=300):
    torch.manual_seed(0)
    h = torch.randn(N, C, requires_grad=True)
    w = torch.randn(V, C, requires_grad=True)
    y = torch.randint(0, V, (N,))
    return h, w, y


@pytest.mark.parametrize("chunk", [5, None])  # 5 rows per chunk (23 = 4·5 + 3); the default, one chunk
def test_linear_logprob_matches_readable_values_and_grads(chunk):
    h, w, y = _linear_logprob_case()
    ours = kernels.linear_logprob(h, w, y, chunk=chunk)
    ref = M.token_logprobs_readable(h @ w.t(), y)
    torch.testing.assert_close(ours, ref, **TOL)
    g = torch.randn_like(ref)
    for a, b in zip(_grads(ours, (h, w), g), _grads(ref, (h, w), g)):
        torch.testing.assert_close(a, b, **TOL)


@needs_triton
def test_linear_logprob_with_triton_chunks_matches_readable():
    """The CUDA path of linear_logprob (each chunk through the Triton log-prob kernels), run on CPU."""
    h, w, y = _linear_logprob_case()
    ours = kernels.linear_logprob(h, w, y, chunk=8, use_triton=True)
    ref = M.token_logprobs_readable(h @ w.t(), y)
    torch.testing.assert_close(ours, ref, **TOL)
    g = torch.randn_like(ref)
    for a, b in zip(_grads(ours, (h, w), g), _grads(ref, (h, w), g)):
        torch.testing.assert_close(a, b, **TOL)


def test_token_logprobs_same_with_and_without_kernels():
    """model.USE_KERNELS switches between the fused path and the formula; the model sees no difference."""
    torch.manual_seed(0)
    h, w = torch.randn(2, 7, 12), torch.randn(50, 12)
    y = torch.randint(0, 50, (2, 7))
    saved = M.USE_KERNELS
    try:
        M.USE_KERNELS = True
        fused = M.token_logprobs(h, w, y)
        M.USE_KERNELS = False
        readable = M.token_logprobs(h, w, y)
    finally:
        M.USE_KERNELS = saved
    assert fused.shape == (2, 7)
    torch.testing.assert_close(fused, readable, **TOL)


# ---------------------------------------------------------------------------------------------------------
# Import hygiene and the benchmark's memory probe
# ---------------------------------------------------------------------------------------------------------


def test_importing_kernels_does_not_import_triton():
    """Scripts import kernels at start-up; triton must wait until TRITON_INTERPRET is settled."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    code = "import sys, kernels, model; assert 'triton' not in sys.modules, 'triton imported eagerly'"
    subprocess.run([sys.executable, "-c", code], cwd=root, check=True)


def test_bench_memory_probe_sees_the_naive_logits():
    """bench.peak_cpu_memory counts what autograd keeps: the naive log-prob holds (N, V) floats at least."""
    import bench

    r = bench.bench_logprob_memory(n_rows=64, n_embd=16, V=4096)
    assert r["naive"] >= 64 * 4096 * 4
    assert r["ours"] < r["naive"]
