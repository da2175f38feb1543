"""
Fused versions of the two hot spots of RLHF, beside the readable math in model.py.

1. linear_logprob(h, weight, targets): log softmax(h @ weightᵀ)[targets], chunked over rows with the logits
   recomputed in the backward pass, so the (N, V) logits, their softmax and their gradient are never stored
   whole. Runs on any device (this is the CPU path the cpu preset uses).
"""

import torch

HAVE_TRITON = False


class LinearLogProb(torch.autograd.Function):
    """Fuses model.token_logprobs_readable(h @ weight.t(), targets) with the output head.

    forward, per chunk of rows:  z = h_c @ Wᵀ (chunk, V);  out = z[y] - logsumexp(z)
    backward, per chunk:         recompute z;  dz = g · (onehot(y) - softmax(z));  dh_c = dz @ W;  dW += dzᵀ @ h_c
    Peak extra memory: one (chunk, V) block instead of several (N, V) tensors.
    """

    @staticmethod
    def forward(ctx, h, weight, targets, chunk):
        out = torch.empty(h.size(0), dtype=h.dtype, device=h.device)
        for s in range(0, h.size(0), chunk):
            z = h[s : s + chunk] @ weight.t()  # (chunk, V)
            y = targets[s : s + chunk]
            out[s : s + chunk] = z.gather(1, y[:, None]).squeeze(1) - torch.logsumexp(z, dim=1)
        ctx.save_for_backward(h, weight, targets)
        ctx.chunk = chunk
        return out

    @staticmethod
    def backward(ctx, g):
        h, weight, targets = ctx.saved_tensors
        dh = torch.empty_like(h) if ctx.needs_input_grad[0] else None
        dw = torch.zeros_like(weight) if ctx.needs_input_grad[1] else None
        for s in range(0, h.size(0), ctx.chunk):
            hc = h[s : s + ctx.chunk]
            z = hc @ weight.t()  # (chunk, V) recomputed
            dz = torch.softmax(z, dim=1).neg_()  # -softmax(z)
            dz.scatter_add_(1, targets[s : s + ctx.chunk, None], torch.ones_like(z[:, :1]))  # + onehot(y)
            dz.mul_(g[s : s + ctx.chunk, None])  # (chunk, V) d out / d z
            if dh is not None:
                dh[s : s + ctx.chunk] = dz @ weight
            if dw is not None:
                dw.addmm_(dz.t(), hc)
        return dh, dw, None, None


def linear_logprob(h, weight, targets, chunk=1024):
    """h (N, C), weight (V, C), targets (N,) long -> (N,) log-probabilities of the targets."""
    return LinearLogProb.apply(h, weight, targets, chunk)
