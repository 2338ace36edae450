"""KAMA configuration: a frozen dataclass with the defaults of spec 2.3, and the presets."""

from __future__ import annotations

import dataclasses
import math

from tenfold.core.io import ConfigError


@dataclasses.dataclass(frozen=True)
class Config:
    """Analytic articulation and refinement settings (flat fields; [O] = our choice, [R] = recalled)."""

    body_model: str = "procedural"   # "procedural" (SYNTHETIC, seeded) or an SMPL-layout .npz/.pkl path
    seed: int = 0                    # seed of the procedural model and of synthetic bodies
    shape_iters: int = 8             # Gauss-Newton iterations of the bone-length shape fit (spec 2.3 step 1)
    shape_damping: float = 1e-4      # lambda of that fit, metres^2 [O]
    shape_rounds: int = 2            # pose -> closed-form shape (+ bone lengths) -> pose rounds after step 1 [O]
    refine_iters: int = 5            # 0 = analytic only; else LM steps or L-BFGS iterations (step 7)
    refine_method: str = "lm"        # "lm" (per-sample Levenberg-Marquardt [O]) or "lbfgs" (spec [R])
    w_betas: float = 1e-5            # shape prior of the refinement (spec recalls 1e-3 [R]; too strong in metres)
    w_pose: float = 0.0              # zero-mean pose prior of the refinement (spec 2.3 step 7): a floor under the
    #                                  MAP weight of noise_mm (1e-4 until session 21: it pulled clean fits to rest)
    w_anchor: float = 1e-4           # pull towards the analytic pose: holds the twist keypoints cannot see [O]
    noise_mm: float = 0.0            # stated keypoint noise (std per coordinate, mm): MAP prior weights [O]
    pose_std: float = 0.5            # prior std of body joint angles (rad), chosen on validation bodies [O]
    betas_std: float = 0.5           # prior std of beta, chosen on validation bodies [O]
    demo_bodies: int = 8             # synthetic bodies in the demo and `synth`
    device: str = "cpu"

    def __post_init__(self) -> None:
        # shape_damping 0 left the three shape directions bone lengths cannot see singular (a raw LinAlgError), and
        # a negative one was taken without a word
        if not (math.isfinite(self.shape_damping) and self.shape_damping > 0):
            raise ConfigError(f"shape_damping must be > 0 (metres^2), got {self.shape_damping}")
        for name in ("shape_iters", "shape_rounds", "refine_iters", "demo_bodies"):
            if getattr(self, name) < 0:
                raise ConfigError(f"{name} must be >= 0, got {getattr(self, name)}")
        # NaN / Inf / negative prior settings were taken without a word (NaN noise gave NaN prior weights)
        for name in ("noise_mm", "w_betas", "w_pose", "w_anchor"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) >= 0):
                raise ConfigError(f"{name} must be finite and >= 0, got {getattr(self, name)}")
        for name in ("pose_std", "betas_std"):
            if not (math.isfinite(getattr(self, name)) and getattr(self, name) > 0):
                raise ConfigError(f"{name} must be finite and > 0, got {getattr(self, name)}")
        if not 0 <= self.seed < 2**62:  # torch's generators take no negative seed: a traceback after the run dir
            raise ConfigError(f"seed must be a whole number in [0, 2^62), got {self.seed}")
        if self.refine_method not in ("lm", "lbfgs"):
            raise ConfigError(f"refine_method must be 'lm' or 'lbfgs', got {self.refine_method!r}")


PRESETS: dict[str, Config] = {
    "smoke": Config(),
    # the spec's recalled step 7: ~20 per-sample L-BFGS iterations from the analytic start
    "paper": Config(refine_iters=20, refine_method="lbfgs", device="cuda"),
    "analytic": Config(refine_iters=0),
}
