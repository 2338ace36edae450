"""Latent SDEs of LSGM (Vahdat et al. 2021, Sec. 3 and App. B) with closed-form marginals, and the
importance sampling of t that makes the denoising-score-matching cross-entropy low-variance.

Both SDEs are variance preserving: dz = -1/2 beta(t) z dt + sqrt(beta(t)) dw on t in [0, 1], with
q(z_t | z_0) = N(m_t z_0, sigma2_t I). All maths here runs in the dtype of ``t`` (float32 or float64):
w_ll ~ 5e4 at t = 1e-5 overflows fp16, so never call it under fp16 autocast.
"""

from __future__ import annotations

import math

import torch

from tenfold.core.io import ConfigError

SCHEMES = ("ll_uniform", "ll_iw", "drop_all_iw", "drop_sigma2t_iw", "reweight_uniform")


class VPSDE:
    """Linear-beta VPSDE: beta(t) = beta0 + (beta1 - beta0) t,
    m_t = exp(-1/2 beta0 t - 1/4 (beta1 - beta0) t^2), sigma2_t = 1 - (1 - sigma2_0) m_t^2."""

    name = "vpsde"

    def __init__(self, beta0: float = 0.1, beta1: float = 20.0, sigma2_0: float = 0.0) -> None:
        if not (0 < beta0 < beta1):
            raise ConfigError(f"VPSDE needs 0 < beta0 < beta1, got {beta0}, {beta1}")
        if not 0.0 <= sigma2_0 < 1.0:
            raise ConfigError(f"sigma2_0 must lie in [0, 1), got {sigma2_0}")
        self.beta0, self.beta1, self.sigma2_0 = float(beta0), float(beta1), float(sigma2_0)
        self.delta = self.beta1 - self.beta0  # Delta = beta1 - beta0

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """beta(t), the diffusion rate."""
        return self.beta0 + self.delta * t

    def mean_coef(self, t: torch.Tensor) -> torch.Tensor:
        """m_t = exp(-1/2 int_0^t beta) so that E[z_t | z_0] = m_t z_0."""
        return torch.exp(-0.5 * self.beta0 * t - 0.25 * self.delta * t * t)

    def var(self, t: torch.Tensor) -> torch.Tensor:
        """sigma2_t = 1 - (1 - sigma2_0) m_t^2 (written with expm1 so small t keeps its digits)."""
        log_m2 = -self.beta0 * t - 0.5 * self.delta * t * t
        return -torch.expm1(log_m2) + self.sigma2_0 * torch.exp(log_m2)

    def inv_var(self, var: torch.Tensor) -> torch.Tensor:
        """t(sigma2) = (-beta0 + sqrt(beta0^2 - 2 Delta ln((1 - sigma2) / (1 - sigma2_0)))) / Delta."""
        log_m2 = torch.log1p(-var) - math.log1p(-self.sigma2_0)
        return (-self.beta0 + torch.sqrt(self.beta0 ** 2 - 2.0 * self.delta * log_m2)) / self.delta

    # ---- drop_all_iw: t density proportional to 1 - sigma2_t (a truncated Gaussian in t) ----------------
    def _erf_arg(self, t: torch.Tensor) -> torch.Tensor:
        return math.sqrt(self.delta / 2.0) * (t + self.beta0 / self.delta)

    def one_minus_var_integral(self, t_lo: float, t_hi: float = 1.0) -> float:
        """Z = int (1 - sigma2_t) dt = (1 - sigma2_0) e^{beta0^2 / 2 Delta} sqrt(pi / 2 Delta) [erf(...)]
        (the official code has e^{beta0 / 2 Delta}, 0.23 % high)."""
        a = self._erf_arg(torch.tensor([t_lo, t_hi], dtype=torch.float64, device="cpu"))
        span = float(torch.erf(a[1]) - torch.erf(a[0]))
        return (1 - self.sigma2_0) * math.exp(self.beta0 ** 2 / (2 * self.delta)) * math.sqrt(
            math.pi / (2 * self.delta)) * span

    def sample_t_drop_all(self, u: torch.Tensor, t_lo: float) -> torch.Tensor:
        """Inverse CDF of the density proportional to 1 - sigma2_t on [t_lo, 1], in float64 (erfinv near 1)."""
        a = self._erf_arg(torch.tensor([t_lo, 1.0], dtype=torch.float64, device="cpu"))
        e0, e1 = torch.erf(a[0]), torch.erf(a[1])
        e = e0 + u.to(torch.float64) * (e1 - e0)
        t = torch.erfinv(e) / math.sqrt(self.delta / 2.0) - self.beta0 / self.delta
        return t.clamp(t_lo, 1.0).to(u.dtype)


class GeometricVPSDE:
    """Geometric VPSDE (new in LSGM): sigma2_t = sigma2_min r^t - sigma2_min + sigma2_0 with
    r = sigma2_max / sigma2_min, beta(t) = sigma2_min r^t ln r / (1 - sigma2_t),
    m_t = sqrt((1 - sigma2_t) / (1 - sigma2_0)). With sigma2_0 = sigma2_min, ln sigma2_t is linear in t."""

    name = "geometric"

    def __init__(self, sigma2_min: float = 3e-5, sigma2_max: float = 0.999, sigma2_0: float = 3e-5) -> None:
        if not (0 < sigma2_min < sigma2_max < 1):
            raise ConfigError(f"geometric VPSDE needs 0 < sigma2_min < sigma2_max < 1, got {sigma2_min}, {sigma2_max}")
        if not 0.0 <= sigma2_0 < 1.0:
            raise ConfigError(f"sigma2_0 must lie in [0, 1), got {sigma2_0}")
        if not sigma2_max - sigma2_min + sigma2_0 < 1.0:  # sigma2_1 >= 1: beta(1) < 0 and m_1 NaN, without a word
            raise ConfigError(f"geometric VPSDE needs sigma2_1 = sigma2_max - sigma2_min + sigma2_0 < 1, got "
                              f"{sigma2_max} - {sigma2_min} + {sigma2_0}")
        self.sigma2_min, self.sigma2_max, self.sigma2_0 = float(sigma2_min), float(sigma2_max), float(sigma2_0)
        self.log_r = math.log(self.sigma2_max / self.sigma2_min)

    def var(self, t: torch.Tensor) -> torch.Tensor:
        """sigma2_t = sigma2_min r^t - sigma2_min + sigma2_0."""
        return self.sigma2_min * torch.exp(t * self.log_r) - self.sigma2_min + self.sigma2_0

    def beta(self, t: torch.Tensor) -> torch.Tensor:
        """beta(t) = sigma2_min r^t ln r / (1 - sigma2_t) (so that d sigma2 / dt = beta (1 - sigma2))."""
        return self.sigma2_min * torch.exp(t * self.log_r) * self.log_r / (1.0 - self.var(t))

    def mean_coef(self, t: torch.Tensor) -> torch.Tensor:
        """m_t = sqrt((1 - sigma2_t) / (1 - sigma2_0))."""
        return torch.sqrt((1.0 - self.var(t)) / (1.0 - self.sigma2_0))

    def inv_var(self, var: torch.Tensor) -> torch.Tensor:
        """t(sigma2) = ln((sigma2 + sigma2_min - sigma2_0) / sigma2_min) / ln r."""
        return torch.log((var + self.sigma2_min - self.sigma2_0) / self.sigma2_min) / self.log_r


SDE = VPSDE | GeometricVPSDE


def build_sde(kind: str, *, beta0: float = 0.1, beta1: float = 20.0, sigma2_0: float = 0.0,
              sigma2_min: float = 3e-5, sigma2_max: float = 0.999) -> SDE:
    """``"vpsde"`` or ``"geometric"`` from plain numbers."""
    if kind == "vpsde":
        return VPSDE(beta0, beta1, sigma2_0)
    if kind == "geometric":
        return GeometricVPSDE(sigma2_min, sigma2_max, sigma2_0 if sigma2_0 > 0 else sigma2_min)
    raise ConfigError(f"unknown sde '{kind}'; choose vpsde or geometric")


def w_ll(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    """Likelihood weighting w_ll(t) = beta(t) / (2 sigma2_t) of the DSM cross-entropy (Eq. 6)."""
    return sde.beta(t) / (2.0 * sde.var(t))


def check_time_eps(sde: SDE, time_eps: float) -> None:
    """Reject a cutoff whose variance is 0 (the CE constant ln sigma2_eps would be -inf)."""
    if not 0.0 <= time_eps < 1.0:
        raise ConfigError(f"time_eps must lie in [0, 1), got {time_eps}")
    if float(sde.var(torch.tensor(time_eps, dtype=torch.float64, device="cpu"))) <= 0.0:
        raise ConfigError(f"sigma2(time_eps={time_eps}) = 0 for this SDE; use time_eps > 0 or sigma2_0 > 0")


def sample_t(sde: SDE, scheme: str, n: int, time_eps: float, *, generator: torch.Generator | None = None,
             dtype: torch.dtype = torch.float32, device: torch.device | str = "cpu"
             ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One t per example and the weights that make sum_t w * |eps - eps_hat|^2 unbiased (Table 1, App. F).

    Returns ``t (n,), w_p (n,), w_q (n,)``: ``w_p`` weights the score net's objective, ``w_q`` the VAE's
    (always the likelihood weighting, so the VAE trains a bound). Schemes:

    - ``ll_uniform``: t ~ U[eps, 1]; w_p = w_q = (1 - eps) w_ll(t) (official code omits 1 - eps).
    - ``ll_iw``: ln sigma2_t ~ U; w_p = w_q = 1/2 ln(sigma2_1 / sigma2_eps) / (1 - sigma2_t).
    - ``drop_all_iw`` (VPSDE): density proportional to 1 - sigma2_t; w_p = Z / (1 - sigma2_t) (the unweighted
      "reweighted" objective), w_q = Z w_ll / (1 - sigma2_t).
    - ``drop_sigma2t_iw``: sigma2_t ~ U; w_p = 1/2 (sigma2_1 - sigma2_eps) / (1 - sigma2_t) (the objective
      weighted by beta(t) / 2, i.e. w_ll with sigma2_t dropped), w_q = w_p / sigma2_t.
    - ``reweight_uniform``: t ~ U[eps, 1]; w_p = 1 - eps, w_q = (1 - eps) w_ll(t).
    """
    if scheme not in SCHEMES:
        raise ConfigError(f"unknown t-sampling scheme '{scheme}'; choose one of: {', '.join(SCHEMES)}")
    check_time_eps(sde, time_eps)  # time_eps 0 gave NaN weights and 1.5 negative ones, without a word
    u = torch.rand(n, generator=generator, dtype=torch.float64, device=device)
    f64 = torch.float64
    eps_t = torch.tensor(time_eps, dtype=f64, device=device)
    if scheme in ("ll_uniform", "reweight_uniform"):
        t = time_eps + (1.0 - time_eps) * u
        wq = (1.0 - time_eps) * w_ll(sde, t)
        wp = wq if scheme == "ll_uniform" else torch.full_like(t, 1.0 - time_eps)
    elif scheme == "ll_iw":
        lo, hi = torch.log(sde.var(eps_t)), torch.log(sde.var(torch.ones((), dtype=f64, device=device)))
        var = torch.exp(lo + u * (hi - lo))  # ln sigma2_t uniform
        t = sde.inv_var(var).clamp(time_eps, 1.0)
        wp = wq = 0.5 * (hi - lo) / (1.0 - var)
    elif scheme == "drop_sigma2t_iw":
        lo, hi = sde.var(eps_t), sde.var(torch.ones((), dtype=f64, device=device))
        var = lo + u * (hi - lo)  # sigma2_t uniform
        t = sde.inv_var(var).clamp(time_eps, 1.0)
        wp = 0.5 * (hi - lo) / (1.0 - var)
        wq = wp / var
    else:
        if not isinstance(sde, VPSDE):
            raise ConfigError("drop_all_iw is defined for the VPSDE only; use ll_iw or ll_uniform with geometric")
        t = sde.sample_t_drop_all(u, time_eps)
        z = sde.one_minus_var_integral(time_eps)
        wp = z / (1.0 - sde.var(t))
        wq = wp * w_ll(sde, t)
    return t.to(dtype), wp.to(dtype), wq.to(dtype)
