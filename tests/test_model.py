"""Tests of model.py: attention, causality, KV cache, log-probs, training, checkpoints, the gpu preset."""

import os

import pytest
import torch
import torch.nn.functional as F

import model as M


def tiny(vocab=61, **kw):
    torch.manual_seed(0)
    cfg = M.GPTConfig(vocab_size=vocab, block_size=48, n_layer=2, n_head=2, n_embd=16, **kw)
    return M.GPT(cfg).eval()


@pytest.fixture(autouse=True)
def restore_impl():
    impl, kern = M.ATTN_IMPL, M.USE_KERNELS
    yield
    M.set_attention_impl(impl)
    M.USE_KERNELS = kern


def test_attention_matches_sdpa_values_and_grads():
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 13, 8, dtype=torch.float64, requires_grad=True) for _ in range(3))
    ours = M.attention(q, k, v)
    ref = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    assert torch.allclose(ours, ref, atol=1e-10)
    g = torch.randn_like(ours)
    grads = torch.autograd.grad(ours, (q, k, v), g)
    ref_grads = torch.autograd.grad(ref, (q, k, v), g)
    for a, b in zip(grads, ref_grads):
        assert torch.allclose(a, b, atol=1e-10)


@pytest.mark.parametrize("Tq, padded", [(13, False), (13, True), (4, True), (1, True)])
def test_fast_attention_matches_readable_values_and_grads(Tq, padded):
    """attention_fast (the default on a CPU with native bf16) against attention(): full sequences, left padding,
    and the last Tq queries of a longer sequence (a KV cache), at every query that has a real key; gradients too."""
    torch.manual_seed(0)
    Tk = 13
    q = torch.randn(3, 2, Tq, 8, dtype=torch.float64, requires_grad=True)
    k, v = (torch.randn(3, 2, Tk, 8, dtype=torch.float64, requires_grad=True) for _ in range(2))
    key_mask = torch.arange(Tk)[None, :] >= torch.tensor([[0], [5], [11]]) if padded else None  # (3, Tk)
    real = key_mask[:, Tk - Tq :] if padded else torch.ones(3, Tq, dtype=torch.bool)  # (3, Tq) queries to compare
    ours, ref = M.attention_fast(q, k, v, key_mask), M.attention(q, k, v, key_mask)
    torch.testing.assert_close(ours.transpose(1, 2)[real], ref.transpose(1, 2)[real], atol=1e-10, rtol=1e-10)
    g = torch.randn_like(ref) * real[:, None, :, None]  # padding queries' outputs are never read
    for a, b in zip(torch.autograd.grad(ours, (q, k, v), g), torch.autograd.grad(ref, (q, k, v), g)):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


def test_fast_attention_builds_a_new_bias_for_a_new_mask_of_the_same_shape():
    """attention_bias keeps the last mask's bias for the next layer; another mask of the same shape must not get
    it."""
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 2, 6, 4, dtype=torch.float64) for _ in range(3))
    m1 = torch.tensor([[True] * 6, [False, False] + [True] * 4])
    m2 = torch.tensor([[False] * 3 + [True] * 3, [True] * 6])
    for m in (m1, m2, m1, None, m2):
        real = m if m is not None else torch.ones(2, 6, dtype=torch.bool)
        ours, ref = M.attention_fast(q, k, v, m), M.attention(q, k, v, m)
        torch.testing.assert_close(ours.transpose(1, 2)[real], ref.transpose(1, 2)[real])


@pytest.mark.parametrize("impl", ["readable", "fast", "sdpa"])
def test_future_token_never_changes_earlier_outputs(impl):
    M.set_attention_impl(impl)
    m = tiny()
    x = torch.randint(0, 61, (2, 20))
    h1 = m(x)
    x2 = x.clone()
    x2[:, 12] = (x2[:, 12] + 1) % 61
    h2 = m(x2)
    assert torch.allclose(h1[:, :12], h2[:, :12], atol=1e-6)
    assert not torch.allclose(h1[:, 12:], h2[:, 12:], atol=1e-6)


@pytest.mark.parametrize("impl", ["readable", "fast", "sdpa"])
def test_left_padding_computes_what_each_row_computes_alone(impl):
    M.set_attention_impl(impl)
    m = tiny()
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13]]
    idx, mask, pos = M.left_pad(prompts, 0, "cpu")
    h = m(idx, pos, mask)
    for i, p in enumerate(prompts):
        alone = m(torch.tensor([p]))
        assert torch.allclose(h[i, -len(p) :], alone[0], atol=1e-5)


@pytest.mark.parametrize("impl", ["readable", "fast", "sdpa"])
def test_kv_cache_matches_full_recompute(impl):
    M.set_attention_impl(impl)
    m = tiny()
    prompts = [[1, 2, 3, 4, 5, 6, 7], [8, 9], [10, 11, 12, 13], [5]]
    eot = 60
    cached = M.generate(m, prompts, 20, temperature=0, eot=eot)
    full = M.generate_nocache(m, prompts, 20, eot=eot)
    assert cached == full
    assert all(len(c) > 0 for c in cached)


def test_generation_stops_at_eot_and_compacts_finished_rows():
    m = tiny()
    prompts = [[1, 2, 3], [4, 5, 6, 7, 8]]
    greedy = M.generate_nocache(m, prompts, 12, eot=-1)  # no EOT: the reference runs to the end
    eot = greedy[0][3]  # make row 0 stop at its 4th token
    out = M.generate(m, prompts, 12, temperature=0, eot=eot)
    ref = M.generate_nocache(m, prompts, 12, eot=eot)
    assert out == ref
    assert out[0][-1] == eot and len(out[0]) <= 4


def test_sampling_is_reproducible_with_a_seed():
    m = tiny()
    prompts = [[1, 2, 3], [4, 5]]
    a = M.generate(m, prompts, 10, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(3), eot=60)
    b = M.generate(m, prompts, 10, temperature=1.0, top_k=10, generator=torch.Generator().manual_seed(3), eot=60)
    assert a == b


@pytest.mark.parametrize("use_kernels", [False, True])
def test_logprob_matches_log_softmax_gather(use_kernels):
    M.USE_KERNELS = use_kernels
    torch.manual_seed(0)
    h = torch.randn(3, 7, 16, dtype=torch.float64, requires_grad=True)
    w = torch.randn(61, 16, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, 61, (3, 7))
    ours = M.token_logprobs(h, w, y)
    ref = torch.log_softmax(h @ w.t(), dim=-1).gather(-1, y[..., None]).squeeze(-1)
    assert torch.allclose(ours, ref, atol=1e-10)
    g = torch.randn_like(ours)
    for a, b in zip(torch.autograd.grad(ours, (h, w), g), torch.autograd.grad(ref, (h, w), g)):
        assert torch.allclose(a, b, atol=1e-10)


def test_logprobs_at_masked_positions_equal_the_full_computation():
    m = tiny()
    x, y = torch.randint(0, 61, (3, 11)), torch.randint(0, 61, (3, 11))
    mask = torch.rand(3, 11) < 0.4
    ours = m.logprobs_at(x, y, mask)
    full = m.logprobs(x, y)
    assert ours.shape == (int(mask.sum()),)
    assert torch.allclose(ours, full[mask], atol=1e-6)
    g_ours = torch.autograd.grad(ours.sum(), m.lm_head.weight)[0]
    g_full = torch.autograd.grad(full[mask].sum(), m.lm_head.weight)[0]
    assert torch.allclose(g_ours, g_full, atol=1e-6)


def test_reward_loglik_at_response_positions_equals_the_full_sum():
    m = tiny(scalar_head=True)
    ids = torch.randint(0, 61, (3, 12))
    mask = torch.zeros(3, 11)
    for b, (s, e) in enumerate([(2, 9), (5, 11), (0, 4)]):  # each row's response positions
        mask[b, s:e] = 1.0
    head, loglik = M.reward_parts(m, ids, mask)
    full = (m.logprobs(ids[:, :-1], ids[:, 1:]) * mask).sum(1)  # (B,) every position, then masked
    assert torch.allclose(loglik, full, atol=1e-5)
    g = torch.autograd.grad(loglik.sum(), m.lm_head.weight)[0]
    g_full = torch.autograd.grad(full.sum(), m.lm_head.weight)[0]
    assert torch.allclose(g, g_full, atol=1e-5)


def test_model_overfits_one_batch():
    m = tiny().train()
    opt = M.configure_optimizer(m, 3e-3, weight_decay=0.0)
    x = torch.randint(0, 61, (4, 24))
    y = torch.randint(0, 61, (4, 24))
    for _ in range(300):
        loss = -m.logprobs(x, y).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05


def test_scalar_head_reads_one_number_per_position():
    m = tiny(scalar_head=True)
    x = torch.randint(0, 61, (2, 9))
    assert m.scores(x).shape == (2, 9)


def test_checkpoint_roundtrip_is_exact(tmp_path):
    m = tiny(scalar_head=True)
    path = str(tmp_path / "x.pt")
    M.save_checkpoint(path, m, "test", "unit", "tok123", extra=dict(note="hi"))
    m2, ckpt = M.load_checkpoint(path, "make it", tokenizer_id="tok123")
    assert ckpt["extra"]["note"] == "hi" and ckpt["preset"] == "test"
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    assert not os.path.exists(path + ".tmp")


def test_lm_checkpoint_becomes_reward_model_init(tmp_path):
    m = tiny()
    path = str(tmp_path / "lm.pt")
    M.save_checkpoint(path, m, "test", "sft", "tok")
    rm, _ = M.load_checkpoint(path, "x", scalar_head=True)
    assert rm.cfg.scalar_head and torch.equal(rm.transformer.wte.weight, m.transformer.wte.weight)


def test_truncated_or_missing_or_mismatched_checkpoint_gives_clear_error(tmp_path):
    m = tiny()
    path = str(tmp_path / "x.pt")
    M.save_checkpoint(path, m, "test", "unit", "tok123")
    data = open(path, "rb").read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(SystemExit, match="not a readable checkpoint.*run `python sft.py"):
        M.load_checkpoint(path, "python sft.py --preset test")
    with pytest.raises(SystemExit, match="not found: run `python sft.py --preset test` first"):
        M.load_checkpoint(str(tmp_path / "nope.pt"), "python sft.py --preset test")
    M.save_checkpoint(path, m, "test", "unit", "tok123")
    with pytest.raises(SystemExit, match="another tokenizer"):
        M.load_checkpoint(path, "x", tokenizer_id="other")


def test_gpu_preset_builds_and_takes_one_training_step_on_cpu():
    torch.manual_seed(0)
    cfg = M.GPTConfig(vocab_size=8192, **M.MODEL_PRESETS["gpu"])
    m = M.GPT(cfg)
    assert 20e6 < m.num_params() < 60e6
    opt = M.configure_optimizer(m, 1e-4)
    x = torch.randint(0, 8192, (1, 64))
    before = m.transformer.h[0].attn.c_attn.weight.detach().clone()
    loss = -m.logprobs(x, x.roll(-1, 1)).mean()
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    assert not torch.equal(before, m.transformer.h[0].attn.c_attn.weight)


@pytest.mark.skipif(not M.native_bf16("cpu"), reason="this CPU has no native bf16 matmul")
@pytest.mark.parametrize("impl", ["readable", "fast", "sdpa"])
def test_bf16_autocast_keeps_heads_fp32_and_stays_close_to_fp32(impl, monkeypatch):
    """The fast path (bf16 body under M.autocast) against the readable one (fp32): log-probs, scores and the
    gradient agree closely, and what leaves the heads is fp32."""
    M.set_attention_impl(impl)
    m = tiny(scalar_head=True)
    x, y = torch.randint(0, 61, (3, 20)), torch.randint(0, 61, (3, 20))

    def run():
        m.zero_grad()
        with M.autocast("cpu"):
            lp, sc, lg = m.logprobs(x, y), m.scores(x), m.logits(m(x))
        (-lp.mean() + sc.mean()).backward()
        return lp.detach(), sc.detach(), lg.dtype, m.transformer.h[0].mlp.c_fc.weight.grad.clone()

    lp32, sc32, _, g32 = run()
    monkeypatch.setattr(M, "BF16", True)
    lp16, sc16, lg_dtype, g16 = run()
    assert lp16.dtype == sc16.dtype == lg_dtype == g16.dtype == torch.float32
    assert not torch.equal(lp16, lp32)  # bf16 really ran
    assert (lp16 - lp32).abs().max() < 0.02 and (sc16 - sc32).abs().max() < 0.02
    assert F.cosine_similarity(g16.flatten(), g32.flatten(), dim=0) > 0.99


def test_precision_bf16_without_native_support_is_a_clear_error(monkeypatch, capsys):
    monkeypatch.setattr(M, "native_bf16", lambda device: False)
    with pytest.raises(SystemExit, match="--precision fp32"):
        M.set_precision("bf16", "cpu")
    capsys.readouterr()
    M.set_precision("auto", "cpu")
    assert M.BF16 is False
    assert "no native bf16 matmul" in capsys.readouterr().out  # not "runs at 0.00x fp32"


def test_precision_auto_follows_the_measured_bf16_speedup(monkeypatch):
    """A CPU can report native bf16 and still run it slower than fp32: auto picks bf16 only where it pays."""
    monkeypatch.setattr(M, "native_bf16", lambda device: True)
    for speedup, expected in [(2.0, True), (0.44, False), (1.1, False)]:
        monkeypatch.setattr(M, "bf16_speedup", lambda device, s=speedup: s)
        M.set_precision("auto", "cpu")
        assert M.BF16 is expected
    M.set_precision("fp32", "cpu")
    assert M.BF16 is False
    M.set_precision("bf16", "cpu")
    assert M.BF16 is True


def test_bf16_speedup_is_measured_and_zero_without_native_bf16(monkeypatch):
    if M.native_bf16("cpu"):
        assert M.bf16_speedup("cpu") > 0
    monkeypatch.setattr(M, "native_bf16", lambda device: False)
    assert M.bf16_speedup("cpu") == 0.0
