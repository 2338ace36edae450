"""LSGM maths against independent references: SDE moments vs simulation and ODE integration, t-sampling
weights vs quadrature, the DSM cross-entropy and the ODE likelihood vs closed forms for Gaussians, the mixed
score's limits, and the decoders' normalisation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import integrate

from tenfold.core.io import ConfigError, InputError
from tenfold.lsgm.nets import MixedScore, UNet, time_embedding
from tenfold.lsgm.objective import ce_constant, cross_entropy_dsm, diffuse
from tenfold.lsgm.ode import ode_nll, ode_sample
from tenfold.lsgm.sde import VPSDE, GeometricVPSDE, check_time_eps, sample_t, w_ll
from tenfold.lsgm.vae import bernoulli_log_prob, dlogistic_mixture_log_prob

F64 = torch.float64
SDES = [VPSDE(0.1, 20.0), VPSDE(0.1, 20.0, sigma2_0=1e-3), GeometricVPSDE(3e-5, 0.999, 3e-5)]


@pytest.mark.parametrize("sde", SDES, ids=["vp", "vp-s0", "geo"])
def test_marginals_match_moment_odes(sde):
    """m_t and sigma2_t solve dm/dt = -1/2 beta m, dv/dt = beta (1 - v) from (1, sigma2_0)."""
    def rhs(t, y):
        b = float(sde.beta(torch.tensor(t, dtype=F64)))
        return [-0.5 * b * y[0], b * (1 - y[1])]

    ts = np.array([0.05, 0.3, 0.7, 1.0])
    sol = integrate.solve_ivp(rhs, (0, 1), [1.0, sde.sigma2_0], t_eval=ts, rtol=1e-11, atol=1e-13)
    t = torch.tensor(ts, dtype=F64)
    np.testing.assert_allclose(sde.mean_coef(t).numpy(), sol.y[0], rtol=1e-7)
    np.testing.assert_allclose(sde.var(t).numpy(), sol.y[1], rtol=1e-7, atol=1e-12)
    np.testing.assert_allclose(sde.inv_var(sde.var(t)).numpy(), ts, rtol=1e-8)


@pytest.mark.parametrize("sde", [SDES[0], GeometricVPSDE(3e-5, 0.9, 3e-5)], ids=["vp", "geo"])
def test_marginals_match_simulation(sde):
    """Euler-Maruyama paths of dz = -1/2 beta z dt + sqrt(beta) dw from z0 have mean m_t z0, variance sigma2_t.
    (sigma2_max = 0.9 for the geometric SDE: at 0.999, beta(1) ~ 1e4 needs far finer Euler steps.)"""
    g = torch.Generator().manual_seed(0)
    n, steps, z0 = 20000, 2000, 1.5
    z = torch.full((n,), z0, dtype=F64) + math.sqrt(sde.sigma2_0) * torch.randn(n, generator=g, dtype=F64)
    dt = 1.0 / steps
    checks = {500: None, 2000: None}
    for i in range(steps):
        b = float(sde.beta(torch.tensor((i + 0.5) * dt, dtype=F64)))
        z = z - 0.5 * b * z * dt + math.sqrt(b * dt) * torch.randn(n, generator=g, dtype=F64)
        if i + 1 in checks:
            t = torch.tensor((i + 1) * dt, dtype=F64)
            m, v = float(sde.mean_coef(t)) * z0, float(sde.var(t))
            se_mean, se_var = math.sqrt(v / n), v * math.sqrt(2 / n)
            assert abs(float(z.mean()) - m) < 4 * se_mean + 2e-3
            assert abs(float(z.var()) - v) < 4 * se_var + 2e-3


def test_geometric_sde_with_sigma2_1_at_or_above_one_is_rejected():
    """sigma2_1 = sigma2_max - sigma2_min + sigma2_0 >= 1 gave beta(1) < 0, m_1 = NaN and negative weights."""
    with pytest.raises(ConfigError, match="sigma2_1"):
        GeometricVPSDE(3e-5, 0.999, 0.01)
    sde = GeometricVPSDE(3e-5, 0.999, 1e-3)
    assert float(sde.var(torch.tensor(1.0, dtype=F64))) < 1 and float(sde.beta(torch.tensor(1.0, dtype=F64))) > 0


def test_time_eps_with_zero_variance_is_rejected():
    with pytest.raises(ConfigError):
        check_time_eps(VPSDE(), 0.0)
    check_time_eps(VPSDE(), 1e-5)
    check_time_eps(GeometricVPSDE(), 0.0)


@pytest.mark.parametrize("sde,scheme", [(SDES[0], "ll_uniform"), (SDES[0], "ll_iw"), (SDES[0], "drop_all_iw"),
                                        (SDES[1], "drop_all_iw"), (SDES[2], "ll_iw"), (SDES[2], "ll_uniform"),
                                        (SDES[0], "reweight_uniform"), (SDES[0], "drop_sigma2t_iw"),
                                        (SDES[2], "drop_sigma2t_iw")])
def test_t_sampling_weights_are_unbiased(sde, scheme):
    """E_scheme[w_q h(t)] = int w_ll h dt and E[w_p h(t)] = int w_p-target h dt, by quadrature, for a smooth h."""
    eps = 1e-3
    g = torch.Generator().manual_seed(1)
    t, wp, wq = sample_t(sde, scheme, 400000, eps, generator=g, dtype=F64)
    assert float(t.min()) >= eps and float(t.max()) <= 1.0

    def h(tt):
        return 1.0 - sde.var(tt) + 0.3 * tt

    def quad(f):
        return integrate.quad(lambda s: float(f(torch.tensor(s, dtype=F64))), eps, 1.0, limit=400,
                              points=[0.01, 0.1])[0]

    target_q = quad(lambda s: w_ll(sde, s) * h(s))
    est = wq * h(t)
    assert abs(float(est.mean()) - target_q) < 4 * float(est.std()) / math.sqrt(len(t)) + 1e-6 * abs(target_q)
    if scheme.startswith("ll_"):
        target_p = target_q
    elif scheme == "drop_sigma2t_iw":  # w_ll with sigma2_t dropped: beta(t) / 2
        target_p = quad(lambda s: 0.5 * sde.beta(s) * h(s))
    else:
        target_p = quad(h)
    est = wp * h(t)
    assert abs(float(est.mean()) - target_p) < 4 * float(est.std()) / math.sqrt(len(t)) + 1e-6 * abs(target_p)


def test_drop_all_normaliser_matches_quadrature():
    for sde in SDES[:2]:
        z = integrate.quad(lambda s, sde=sde: 1.0 - float(sde.var(torch.tensor(s, dtype=F64))), 0.01, 1.0,
                           epsabs=1e-13)[0]
        assert sde.one_minus_var_integral(0.01) == pytest.approx(z, rel=1e-9)


def _gaussian_ce_terms(sde, scheme, n, mu, s, time_eps, seed):
    """Per-draw DSM CE estimates for q(z0) = N(mu, s^2 I) and the exact N(0, I) prior score (alpha = 0)."""
    g = torch.Generator().manual_seed(seed)
    D = mu.numel()
    z0 = mu + s * torch.randn(n, D, generator=g, dtype=F64)
    t, _, wq = sample_t(sde, scheme, n, time_eps, generator=g, dtype=F64)
    noise = torch.randn(n, D, generator=g, dtype=F64)
    z_t, sigma = diffuse(sde, z0, t, noise)
    eps_hat = sigma[:, None] * z_t  # the mixed score with alpha = 0
    return cross_entropy_dsm(noise, eps_hat, wq, ce_constant(sde, time_eps, D))


@pytest.mark.parametrize("sde,scheme,time_eps", [
    (VPSDE(), "ll_iw", 1e-5), (VPSDE(), "ll_uniform", 1e-5),
    # session 23 review: the VAE side's q-weights under the score net's t draws, and the geometric SDE
    (VPSDE(), "drop_all_iw", 0.01), (VPSDE(), "drop_sigma2t_iw", 0.01), (GeometricVPSDE(), "ll_uniform", 1e-5)],
    ids=["vp-ll_iw", "vp-ll_uniform", "vp-drop_all_iw", "vp-drop_sigma2t_iw", "geo-ll_uniform"])
def test_cross_entropy_estimate_matches_closed_form(sde, scheme, time_eps):
    """E[CE estimate] = 1/2 sum [ln(s1/se) - (s1 - se) + c (s1 - se)] + D/2 ln(2 pi e se) with c = mu^2 + s^2,
    s1 = sigma2_1, se = sigma2_eps (derived in closed form), which -> the analytic CE(q || N(0, I)) as eps -> 0.
    Every scheme's q-weights (the VAE side's) make the estimate the same CE, whichever density drew t."""
    mu, s = torch.tensor([0.5, -1.0, 0.2, 1.3], dtype=F64), 0.7
    ce = _gaussian_ce_terms(sde, scheme, 200000, mu, s, time_eps, seed=3)
    s1 = float(sde.var(torch.tensor(1.0, dtype=F64)))
    se = float(sde.var(torch.tensor(time_eps, dtype=F64)))
    c = (mu ** 2 + s ** 2).numpy()
    exact = float(np.sum(0.5 * (math.log(s1 / se) - (s1 - se) + c * (s1 - se)))) + ce_constant(sde, time_eps, 4)
    analytic = float(0.5 * np.sum(c) + 2 * math.log(2 * math.pi))
    se_mc = float(ce.std()) / math.sqrt(len(ce))
    assert abs(float(ce.mean()) - exact) < 3.5 * se_mc
    if time_eps < 1e-3 and isinstance(sde, VPSDE):  # the geometric SDE's sigma2_1 is 0.999, not 1: no such limit
        assert exact == pytest.approx(analytic, abs=1e-3)


def test_importance_sampling_same_mean_lower_variance():
    """ll_iw and uniform t agree in expectation (seeded) and IS cuts the per-draw std by >= 10x."""
    sde, mu, s = VPSDE(), torch.tensor([0.5, -1.0, 0.2, 1.3], dtype=F64), 0.7
    uni = _gaussian_ce_terms(sde, "ll_uniform", 100000, mu, s, 1e-5, seed=4)
    iw = _gaussian_ce_terms(sde, "ll_iw", 100000, mu, s, 1e-5, seed=5)
    se = math.sqrt(float(uni.var()) / len(uni) + float(iw.var()) / len(iw))
    assert abs(float(uni.mean()) - float(iw.mean())) < 3.5 * se
    assert float(uni.std()) > 10 * float(iw.std())


def _gaussian_eps_fn(sde, s2):
    """eps_hat of the diffused N(0, s2 I): p_t = N(0, m^2 s2 + sigma2), eps_hat = sigma z / (m^2 s2 + sigma2)."""
    def fn(z, t):
        m2, v = sde.mean_coef(t) ** 2, sde.var(t)
        shape = (-1,) + (1,) * (z.dim() - 1)
        return (v.sqrt() / (m2 * s2 + v)).reshape(shape) * z
    return fn


@pytest.mark.parametrize("sde", SDES[::2], ids=["vp", "geo"])
def test_ode_nll_of_a_gaussian_matches_closed_form(sde):
    """Exact-trace ODE NLL of N(0, s2 I) data equals -ln N(z0; 0, s2 I) within 0.02 nats per example."""
    s2, D = 0.3, 6
    g = torch.Generator().manual_seed(0)
    z0 = math.sqrt(s2) * torch.randn(8, D, generator=g, dtype=F64)
    nll, nfe = ode_nll(_gaussian_eps_fn(sde, s2), sde, z0, ode_eps=1e-5, tol=1e-7, exact_trace=True)
    ref = 0.5 * (z0 ** 2).sum(1) / s2 + 0.5 * D * math.log(2 * math.pi * s2)
    assert (nll - ref).abs().max() < 0.02
    assert nfe > 10
    # Hutchinson with one fixed Rademacher probe per solve is unbiased: its error has mean 0 within 4 SE
    zz = z0.repeat(64, 1)
    nll_h, _ = ode_nll(_gaussian_eps_fn(sde, s2), sde, zz, tol=1e-6, exact_trace=False, generator=g)
    err = nll_h - (0.5 * (zz ** 2).sum(1) / s2 + 0.5 * D * math.log(2 * math.pi * s2))
    assert abs(float(err.mean())) < 4 * float(err.std()) / math.sqrt(len(err)) + 0.02


def test_hutchinson_nll_of_a_correlated_gaussian_is_unbiased_and_really_estimates():
    """Session 23 review: with N(0, s2 I) data the drift's Jacobian is c I, so v^T J v is the trace for ANY +-1
    probe and the test above cannot see a wrong probe. With a full covariance S (drift Jacobian not diagonal) one
    fixed Rademacher probe per example errs per example (std well above 0) and is unbiased over many."""
    sde, D = VPSDE(), 6
    g = torch.Generator().manual_seed(3)
    A = torch.randn(D, D, generator=g, dtype=F64)
    S = A @ A.T / D + 0.2 * torch.eye(D, dtype=F64)

    def eps_fn(z, t):  # eps_hat = sigma_t S_t^{-1} z with S_t = m_t^2 S + sigma_t^2 I, per example's t
        m2, v = sde.mean_coef(t) ** 2, sde.var(t)
        St = m2[:, None, None] * S + v[:, None, None] * torch.eye(D, dtype=F64)
        return v.sqrt()[:, None] * torch.linalg.solve(St, z)

    z0 = (torch.linalg.cholesky(S) @ torch.randn(D, 256, generator=g, dtype=F64)).T
    ref = 0.5 * (z0 @ torch.linalg.inv(S) * z0).sum(1) + 0.5 * torch.logdet(2 * math.pi * S)
    exact, _ = ode_nll(eps_fn, sde, z0[:8], tol=1e-7, exact_trace=True)
    assert (exact - ref[:8]).abs().max() < 0.02
    nll, _ = ode_nll(eps_fn, sde, z0, tol=1e-6, exact_trace=False, generator=g)
    err = nll - ref
    assert float(err.std()) > 0.1  # a probe that gave the trace exactly here would be no estimator of this Jacobian
    assert abs(float(err.mean())) < 4 * float(err.std()) / math.sqrt(len(err)) + 0.02


def test_ode_sampling_of_a_gaussian_has_the_right_variance():
    sde, s2 = VPSDE(), 0.25
    z1 = torch.randn(4000, 3, dtype=F64, generator=torch.Generator().manual_seed(0))
    z, nfe = ode_sample(_gaussian_eps_fn(sde, s2), sde, z1, tol=1e-6)
    assert torch.isfinite(z).all() and nfe > 0
    assert float(z.var()) == pytest.approx(s2, rel=0.05)


def test_mixed_score_limits():
    """alpha = 0: exactly the Normal eps sigma_t z_t; alpha = 1: exactly the network's eps'."""
    net = UNet(4, ch=16, ch_mult=(1,), num_res_blocks=1, dropout=0.0)
    torch.nn.init.normal_(net.out.weight)  # a non-trivial network output
    ms = MixedScore(net, 4, logit_init=-6.0).eval()
    z, t = torch.randn(3, 4, 4, 4), torch.rand(3)
    sigma = VPSDE().var(t).sqrt()
    with torch.no_grad():
        ms.mix_logit.fill_(-math.inf)
        assert torch.equal(ms(z, t, sigma), sigma[:, None, None, None] * z)
        ms.mix_logit.fill_(math.inf)
        assert torch.allclose(ms(z, t, sigma), net(z, t))
        ms.mix_logit.fill_(0.0)
        ms.active[1] = 0  # an inactive channel follows the Normal score
        out = ms(z, t, sigma)
        assert torch.allclose(out[:, 1], (1 - torch.sigmoid(torch.tensor(-15.0))) * sigma[:, None, None] * z[:, 1]
                              + torch.sigmoid(torch.tensor(-15.0)) * net(z * ms.active[None, :, None, None], t)[:, 1])
    # without the mix (the ablation): active channels are the net's eps' exactly, inactive ones the Normal eps
    # (the net never sees their z_t; until session 21 it had to predict their eps blind)
    plain = MixedScore(net, 4, mixed=False).eval()
    with torch.no_grad():
        assert torch.equal(plain(z, t, sigma), net(z, t).float())
        plain.active[1] = 0
        out = plain(z, t, sigma)
        masked = net(z * plain.active[None, :, None, None], t)
        assert torch.equal(out[:, 1], sigma[:, None, None] * z[:, 1]) and torch.equal(out[:, 0], masked[:, 0])


def test_unet_time_scale_rescales_time_only():
    """``time_scale`` s conditions the net on s t: the same weights at s = 100 and t equal s = 1000 at t / 10;
    the parameter count does not change (the benchmark matches parameter counts)."""
    torch.manual_seed(0)
    a = UNet(2, ch=16, ch_mult=(1, 2), num_res_blocks=1, dropout=0.0, time_scale=100.0)
    torch.nn.init.normal_(a.out.weight)
    b = UNet(2, ch=16, ch_mult=(1, 2), num_res_blocks=1, dropout=0.0)
    b.load_state_dict(a.state_dict())
    x, t = torch.randn(3, 2, 6, 6), torch.rand(3)
    with torch.no_grad():
        assert torch.allclose(a(x, t), b(x, t / 10), atol=1e-5)
        assert not torch.allclose(a(x, t), b(x, t), atol=1e-3)
    assert sum(p.numel() for p in a.parameters()) == sum(p.numel() for p in b.parameters())


def test_time_embedding_is_sin_then_cos_of_scaled_time_at_geometric_frequencies() -> None:
    """The official get_timestep_embedding: [sin(s t f_k), cos(s t f_k)], f_k = 10000^(-k / (half - 1)); the fastest
    feature is sin(s t). A swapped sin/cos or another frequency base conditioned every checkpoint differently."""
    t = torch.tensor([0.0, 0.5, 0.003])
    got = time_embedding(t, 8, scale=1000.0).double()
    assert time_embedding(t, 8).dtype == time_embedding(t.double(), 8).dtype == torch.float32  # float32 nets: as ever
    torch.testing.assert_close(time_embedding(t.double(), 8, scale=1000.0, dtype=F64), got, rtol=0, atol=2e-5)
    f = torch.tensor([1.0, 10000.0 ** (-1 / 3), 10000.0 ** (-2 / 3), 1e-4], dtype=F64)
    a = 1000.0 * t.double()[:, None] * f
    torch.testing.assert_close(got, torch.cat([a.sin(), a.cos()], 1), rtol=0, atol=2e-5)
    assert torch.equal(time_embedding(torch.zeros(2), 6), torch.tensor([[0.0] * 3 + [1.0] * 3] * 2))


def _resblock(blk: torch.nn.Module, x: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
    """ResBlock by its docstring: GN-SiLU-conv, + time, GN-SiLU-conv, (skip + h) / sqrt(2) (dropout 0)."""
    F = torch.nn.functional
    h = blk.c1(F.silu(blk.n1(x))) + blk.temb(temb)[:, :, None, None]
    return (blk.skip(x) + blk.c2(F.silu(blk.n2(h)))) / math.sqrt(2.0)


@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_unet_wiring_matches_an_explicit_two_scale_reference(dtype: torch.dtype) -> None:
    """ch_mult (1, 2), 2 blocks per scale, written out: each up block takes cat([h, skip]) with the skips popped
    deepest first (the stem's output last), residual sums scaled by 1/sqrt(2). Reversed skips, a swapped
    concatenation or a dropped 1/sqrt(2) kept every other test green. In float64 too (the time features were
    float32 whatever the net's dtype, so a float64 U-Net failed on a dtype mismatch)."""
    torch.manual_seed(0)
    net = UNet(2, ch=8, ch_mult=(1, 2), num_res_blocks=2, dropout=0.0).eval().to(dtype)
    torch.nn.init.normal_(net.out.weight, std=0.1)
    x, t = torch.randn(2, 2, 6, 6, dtype=dtype), torch.rand(2, dtype=dtype)
    F = torch.nn.functional
    with torch.no_grad():
        temb = net.temb(time_embedding(t, 8, dtype=dtype))
        h0 = net.inp(x)
        a = _resblock(net.down[0], h0, temb)
        b = _resblock(net.down[1], a, temb)
        c = net.downsample[0](b)
        d = _resblock(net.down[2], c, temb)
        e = _resblock(net.down[3], d, temb)
        h = _resblock(net.mid[1], _resblock(net.mid[0], e, temb), temb)
        for k, s in enumerate((e, d, c)):
            h = _resblock(net.up[k], torch.cat([h, s], 1), temb)
        h = net.upsample[0](F.interpolate(h, size=b.shape[-2:], mode="nearest"))
        for k, s in enumerate((b, a, h0), start=3):
            h = _resblock(net.up[k], torch.cat([h, s], 1), temb)
        want = net.out(F.silu(net.n_out(h)))
        got = net(x, t)
        assert got.dtype == dtype
        if dtype == torch.float32:  # a float64 t (a float64 ODE state) leaves a float32 net's bits alone
            assert torch.equal(net(x, t.double()), got)
        torch.testing.assert_close(got, want, rtol=1e-5 if dtype == torch.float32 else 1e-12,
                                   atol=1e-6 if dtype == torch.float32 else 1e-12)
        assert want.abs().max() > 1e-2


def test_unet_gradcheck_in_float64() -> None:
    """The score net's input gradient (what the ODE likelihood's divergence and the DSM loss use) passes gradcheck."""
    torch.manual_seed(1)
    net = UNet(1, ch=8, ch_mult=(1,), num_res_blocks=1, dropout=0.0).eval().to(F64)
    torch.nn.init.normal_(net.out.weight, std=0.1)
    t = torch.rand(2, dtype=F64)
    x = torch.randn(2, 1, 4, 4, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: net(z, t), (x,), eps=1e-6, atol=1e-6)


def test_fresh_unet_outputs_zero():
    net = UNet(2, ch=16, ch_mult=(1, 2), num_res_blocks=1)
    assert torch.equal(net(torch.randn(2, 2, 7, 7), torch.rand(2)), torch.zeros(2, 2, 7, 7))


def test_dlogistic_mixture_sums_to_one_over_256_bins():
    g = torch.Generator().manual_seed(0)
    M = 3
    params = torch.randn(1, M * 3, 1, 1, generator=g, dtype=F64).expand(256, -1, -1, -1).clone()
    params[:, M + M:] = params[:, M + M:] - 2.0  # some sharp components (the density fallback path)
    x = (torch.arange(256, dtype=F64) / 255 * 2 - 1).reshape(256, 1, 1, 1)
    logp = dlogistic_mixture_log_prob(params, x, num_levels=256, num_mix=M)
    assert float(torch.logsumexp(logp, 0).exp()) == pytest.approx(1.0, abs=2e-4)


def test_dlogistic_mixture_rgb_sums_to_one():
    """RGB with R -> G -> B coupling: the probabilities of all 16^3 colours sum to one."""
    K, M = 16, 2
    levels = torch.arange(K, dtype=F64) / (K - 1) * 2 - 1
    x = torch.cartesian_prod(levels, levels, levels).reshape(-1, 3, 1, 1)
    params = torch.randn(1, M * 10, 1, 1, generator=torch.Generator().manual_seed(1), dtype=F64)
    logp = dlogistic_mixture_log_prob(params.expand(len(x), -1, -1, -1), x, num_levels=K, num_mix=M)
    assert float(torch.logsumexp(logp, 0).exp()) == pytest.approx(1.0, abs=1e-6)
    with pytest.raises(InputError):
        dlogistic_mixture_log_prob(params[:, :5], x[:1], num_levels=K, num_mix=M)


@pytest.mark.parametrize("C", [1, 3])
def test_dlogistic_mixture_draws_follow_its_own_probabilities(C):
    """Draws from the mixture (component by Gumbel-max, channels in turn with the coupling on the drawn values,
    binned) land on each of the K^C colours as often as exp(log_prob) says: total variation below 0.02 over 40,000
    draws at K = 4. Until session 21 colour "draws" were the display mean, one colour for every draw."""
    from tenfold.lsgm.vae import dlogistic_mixture_sample

    K, M, N = 4, 3, 40000
    params = torch.randn(1, M * (1 + 2 * C + (3 if C == 3 else 0)), 1, 1, generator=torch.Generator().manual_seed(2),
                         dtype=F64)
    params[:, M + 2 * C:] *= 2.0  # (the coupling coefficients, for RGB) strong
    x = dlogistic_mixture_sample(params.expand(N, -1, -1, -1), C, M, K, torch.Generator().manual_seed(3))
    codes = torch.round((x.reshape(N, C) + 1) / 2 * (K - 1)).long()
    assert bool(((x + 1) / 2 * (K - 1) - codes.reshape(N, C, 1, 1)).abs().max() < 1e-9)  # on the grid
    index = (codes * torch.tensor([K ** (C - 1 - c) for c in range(C)])).sum(1)
    freq = torch.bincount(index, minlength=K ** C).to(F64) / N
    levels = torch.arange(K, dtype=F64) / (K - 1) * 2 - 1
    grid = (torch.cartesian_prod(*[levels] * C) if C > 1 else levels[:, None]).reshape(-1, C, 1, 1)
    prob = dlogistic_mixture_log_prob(params.expand(len(grid), -1, -1, -1), grid, num_levels=K, num_mix=M).exp()
    assert float(prob.sum()) == pytest.approx(1.0, abs=1e-6)
    assert 0.5 * float((freq - prob).abs().sum()) < 0.02


def test_bernoulli_log_prob():
    logits, x = torch.randn(2, 1, 3, 3, dtype=F64), torch.randint(0, 2, (2, 1, 3, 3)).to(F64)
    p = torch.sigmoid(logits)
    ref = (x * p.log() + (1 - x) * (1 - p).log()).flatten(1).sum(1)
    assert torch.allclose(bernoulli_log_prob(logits, x), ref)


def test_ode_solvers_refuse_a_bad_tolerance():
    """A NaN tolerance used to surface as torchdiffeq's 'underflow in dt' assert, a negative one ran silently."""
    sde = VPSDE()

    def eps(z: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return z * sde.var(t).sqrt().reshape(-1, 1)

    z = torch.randn(3, 2, dtype=F64)
    for tol in (float("nan"), -1e-3, 0.0):
        with pytest.raises(InputError, match="tolerances"):
            ode_sample(eps, sde, z, tol=tol)
        with pytest.raises(InputError, match="tolerances"):
            ode_nll(eps, sde, z, tol=tol)
    assert torch.allclose(ode_sample(eps, sde, z, tol=1e-6)[0], z)  # N(0, I) data: the drift is zero


def test_sample_t_refuses_a_cutoff_without_variance():
    """sample_t is public: time_eps 0 on a VPSDE with sigma2_0 = 0 gave NaN weights, 1.5 negative ones."""
    for eps, match in ((0.0, "sigma2"), (1.5, r"\[0, 1\)"), (-0.1, r"\[0, 1\)")):
        with pytest.raises(ConfigError, match=match):
            sample_t(VPSDE(), "ll_iw", 3, eps)
    t, w_p, w_q = sample_t(VPSDE(), "drop_all_iw", 64, 1e-2, generator=torch.Generator().manual_seed(0))
    assert bool((w_p > 0).all() and (w_q > 0).all())


@pytest.mark.parametrize("scheme", ["ll_uniform", "ll_iw", "drop_all_iw", "drop_sigma2t_iw"])
def test_t_samplers_invert_their_cdf(scheme):
    """Each scheme's t is its CDF's inverse at the uniform draw u (the same seeded draws): F(t(u)) = u. The samplers
    clamp t into [eps, 1], which would hide a wrong inversion from a range check; this one it cannot hide."""
    sde, eps, n = VPSDE(), 1e-3, 2000
    t, _, _ = sample_t(sde, scheme, n, eps, generator=torch.Generator().manual_seed(7), dtype=F64)
    u = torch.rand(n, generator=torch.Generator().manual_seed(7), dtype=F64)
    one, lo_t = torch.tensor(1.0, dtype=F64), torch.tensor(eps, dtype=F64)
    if scheme == "ll_uniform":
        cdf = (t - eps) / (1 - eps)
    elif scheme == "ll_iw":
        lo, hi = torch.log(sde.var(lo_t)), torch.log(sde.var(one))
        cdf = (torch.log(sde.var(t)) - lo) / (hi - lo)
    elif scheme == "drop_sigma2t_iw":
        lo, hi = sde.var(lo_t), sde.var(one)
        cdf = (sde.var(t) - lo) / (hi - lo)
    else:
        cdf = torch.tensor([integrate.quad(lambda s: 1 - float(sde.var(torch.tensor(s, dtype=F64))), eps, float(x),
                                           epsabs=1e-13)[0] for x in t[:200]], dtype=F64) / \
            sde.one_minus_var_integral(eps)
        u = u[:200]
    torch.testing.assert_close(cdf, u, atol=1e-7, rtol=0)


def test_channel_kl_is_deterministic_with_groups_and_a_colour_decoder_draws():
    """With groups > 1 the later groups' posteriors depend on the earlier groups' samples: channel_kl differed
    under two global seeds (it pins "inactive" channels at 0.1 nats); now a fixed seed inside, the global RNG
    untouched. The RGB decoder's sample_image is a draw on the 8-bit grid, not its mean."""
    from tenfold.lsgm.train import channel_kl
    from tenfold.lsgm.vae import VAE

    torch.manual_seed(0)
    vae = VAE(image_channels=3, image_size=8, pad=0, ch=8, levels=1, latent_ch=2, groups=3,
              decoder="logistic_mixture", num_levels=256, num_mix=2).eval()
    x = torch.rand(6, 3, 8, 8)
    torch.manual_seed(1)
    a = channel_kl(vae, x)
    torch.manual_seed(2)
    state = torch.get_rng_state()
    b = channel_kl(vae, x)
    assert torch.equal(a, b) and torch.equal(torch.get_rng_state(), state)
    params = vae.decode(torch.randn(2, *vae.latent_shape))
    draw = vae.sample_image(params, torch.Generator().manual_seed(0))
    assert not torch.equal(draw, vae.mean_image(params))
    assert torch.allclose(draw * 255, (draw * 255).round(), atol=1e-4) and draw.min() >= 0 and draw.max() <= 1
