"""Probability-flow ODE of a VP SDE (Song et al. 2021), used by LSGM for sampling and likelihoods, and the
ancestral (reverse-SDE, Euler-Maruyama) sampler as an option.

The drift is dz/dt = -1/2 beta(t) (z - eps_hat(z, t) / sigma_t). ``eps_fn(z, t) -> eps_hat`` takes z (B, ...)
and t (B,). Integration runs in float32 or float64 with torchdiffeq's adaptive ``dopri5``; the end time
is pinned as a step (``step_t``), otherwise dopri5 evaluates past it (t < 0: NaN variances). NFE counts
every drift call of the solve, rejected steps included.

torchdiffeq picks its first step by probing the drift at t0 + h0, and h0 can be large where the drift is small:
a likelihood solve from ode_eps may probe t far above 1 (a session 23 review saw it on the geometric SDE, where
sigma_t^2 overflows to inf in float32 and the probe is NaN, which torchdiffeq's max() drops). Only the first step's
size depends on such a probe; the solve itself stays inside [ode_eps, 1], and the closed-form NLL tests pass on
both SDEs. Left as is, so that NFE figures keep reproducing.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import torch

from tenfold.core.io import InputError

from .sde import SDE

EpsFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _drift(sde: SDE, eps_fn: EpsFn, z: torch.Tensor, t: float | torch.Tensor) -> torch.Tensor:
    tb = torch.as_tensor(t, dtype=z.dtype, device=z.device).reshape(()).expand(z.shape[0])
    shape = (-1,) + (1,) * (z.dim() - 1)
    beta, sigma = sde.beta(tb).reshape(shape), sde.var(tb).sqrt().reshape(shape)
    return -0.5 * beta * (z - eps_fn(z, tb).to(z.dtype) / sigma)


def _odeint(func: Callable, y0: torch.Tensor | tuple, t0: float, t1: float, rtol: float, atol: float,
            method: str) -> torch.Tensor | tuple:
    from torchdiffeq import odeint

    if not (math.isfinite(rtol) and rtol > 0 and math.isfinite(atol) and atol > 0):  # NaN: a torchdiffeq assert
        raise InputError(f"ODE tolerances must be finite and > 0, got rtol={rtol}, atol={atol}")
    dev = (y0[0] if isinstance(y0, tuple) else y0).device  # times on the state's device (torchdiffeq warns otherwise)
    ts = torch.tensor([t0, t1], dtype=torch.float64, device=dev)
    opts = ({"step_t": torch.tensor([t1], dtype=torch.float64, device=dev)} if method in ("dopri5", "bosh3", "dopri8")
            else None)
    out = odeint(func, y0, ts, rtol=rtol, atol=atol, method=method, options=opts)
    return tuple(o[-1] for o in out) if isinstance(out, tuple) else out[-1]


@torch.no_grad()
def ode_sample(eps_fn: EpsFn, sde: SDE, z1: torch.Tensor, *, ode_eps: float = 1e-5, tol: float = 1e-5,
               method: str = "dopri5") -> tuple[torch.Tensor, int]:
    """Integrate the probability-flow ODE from z(1) = ``z1`` (a N(0, I) draw) down to ``ode_eps``.
    Returns (z(ode_eps), NFE)."""
    nfe = 0

    def f(t: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        nonlocal nfe
        nfe += 1
        return _drift(sde, eps_fn, z, t)

    z = _odeint(f, z1, 1.0, ode_eps, tol, tol, method)
    return z, nfe


def ode_nll(eps_fn: EpsFn, sde: SDE, z0: torch.Tensor, *, ode_eps: float = 1e-5, tol: float = 1e-5,
            exact_trace: bool | None = None, generator: torch.Generator | None = None,
            method: str = "dopri5") -> tuple[torch.Tensor, int]:
    """-ln p_ODE(z0) per example (nats) by the instantaneous change of variables:
    d/dt [z, Delta] = [f(z, t), div f(z, t)] from ode_eps to 1; ln p(z0) = ln N(z(1); 0, I) + Delta(1).

    The divergence is exact (D VJPs) when ``exact_trace`` (default: D <= 64), else Hutchinson's
    v^T (df/dz) v with ONE Rademacher v per solve (fixed over t, as Score SDE; a redraw per call makes
    the trace estimator noisy). Returns (nll (B,), NFE).
    """
    if z0.dim() < 2:
        raise InputError(f"z0 must be (B, ...), got {tuple(z0.shape)}")
    B = z0.shape[0]
    D = z0[0].numel()
    exact = D <= 64 if exact_trace is None else exact_trace
    # drawn on the CPU (where a seeded generator lives), then moved: the same probe on any device
    v = (torch.randint(0, 2, z0.shape, generator=generator, device="cpu").to(z0.dtype) * 2 - 1).to(z0.device)
    nfe = 0

    def f(t: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        nonlocal nfe
        nfe += 1
        z = state[0].detach()
        with torch.enable_grad():
            z.requires_grad_(True)
            dz = _drift(sde, eps_fn, z, t)
            if exact:
                flat = dz.reshape(B, D)
                div = torch.zeros(B, dtype=z.dtype, device=z.device)
                for i in range(D):
                    g = torch.autograd.grad(flat[:, i].sum(), z, retain_graph=i < D - 1)[0]
                    div = div + g.reshape(B, D)[:, i]
            else:
                g = torch.autograd.grad((dz * v).sum(), z)[0]
                div = (g * v).reshape(B, D).sum(1)
        return dz.detach(), div.detach()

    delta0 = torch.zeros(B, dtype=z0.dtype, device=z0.device)
    z1, delta = _odeint(f, (z0.detach(), delta0), ode_eps, 1.0, tol, tol, method)
    log_prior = -0.5 * z1.reshape(B, D).pow(2).sum(1) - 0.5 * D * math.log(2 * math.pi)
    return -(log_prior + delta), nfe


@torch.no_grad()
def sde_sample(eps_fn: EpsFn, sde: SDE, z1: torch.Tensor, *, steps: int = 200, ode_eps: float = 1e-5,
               generator: torch.Generator | None = None) -> tuple[torch.Tensor, int]:
    """Ancestral sampling of the reverse SDE on a uniform grid from 1 to ``ode_eps``: each step draws z_s from
    q(z_s | z_t, z_0 = x0_hat), the Gaussian posterior of the forward process with the network's denoised
    x0_hat = (z_t - sigma_t eps_hat) / m_t: each transition is exact given x0_hat, for both SDEs and any
    step (DDPM's sampler in continuous time); first order in the step, since x0_hat stands for a whole posterior.
    The last step takes the posterior mean. (z, NFE). Euler-Maruyama, used until session 21, blew up on the
    geometric VPSDE, whose beta(1) ~ 1e4 makes beta dt ~ 50 on a 200-step grid: the exact N(0, I) score gave
    samples of std 3.7."""
    ts = torch.linspace(1.0, ode_eps, steps + 1, dtype=torch.float64, device="cpu")
    z = z1
    for i in range(steps):
        tt = ts[i:i + 2]  # (t, s), s < t, in float64
        m_t, m_s = (float(v) for v in sde.mean_coef(tt))
        v_t, v_s = (float(v) for v in sde.var(tt))
        tb = torch.full((z.shape[0],), float(tt[0]), dtype=z.dtype, device=z.device)
        eps = eps_fn(z, tb).to(z.dtype)
        x0 = (z - math.sqrt(v_t) * eps) / m_t
        a2 = (m_t / m_s) ** 2  # alpha_{t|s}^2: z_t | z_s ~ N(alpha z_s, 1 - alpha^2)
        z = (1.0 - a2) * m_s / v_t * x0 + math.sqrt(a2) * v_s / v_t * z
        if i < steps - 1:
            noise = torch.randn(z.shape, generator=generator, dtype=z.dtype, device="cpu").to(z.device)
            z = z + math.sqrt(v_s * (1.0 - a2) / v_t) * noise
    return z, steps


def timed(fn: Callable[[], tuple[torch.Tensor, int]]) -> tuple[torch.Tensor, int, float, float]:
    """Run a sampler; returns (out, NFE, wall seconds, process CPU seconds)."""
    w0, c0 = time.perf_counter(), time.process_time()
    out, nfe = fn()
    return out, nfe, time.perf_counter() - w0, time.process_time() - c0
