"""KAMA's verbs (CLI and Python API): ``synth``, ``fit``, ``bvh``, and the demo section."""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import torch
import tyro

from tenfold.core.data import data_root
from tenfold.core.io import DataError, InputError, check_device, output_dir, require_file
from tenfold.core.report import Section
from tenfold.kama.articulate import fit as kama_fit
from tenfold.kama.articulate import hinge_axes
from tenfold.kama.body_model import BodyModel, load_body_model
from tenfold.kama.config import Config
from tenfold.kama.keypoints import (
    KEYPOINT_NAMES,
    NUM_KEYPOINTS,
    check_keypoints,
    load_landmark_override,
    regress_keypoints,
)
from tenfold.kama.mocap import bvh_keypoints
from tenfold.kama.procedural import procedural_model, random_betas, random_pose

CMU_BVH = "mocap/cmu_131_01_scaled.bvh"


def build(cfg: Config, body_model: str = "", landmarks: str = "") -> BodyModel:
    """The body model named by ``body_model`` (or the config's): 'procedural' or an SMPL-layout file."""
    name = body_model or cfg.body_model
    check_device(cfg.device)  # 'cuda' without CUDA, or 'foo', was a raw RuntimeError from .to()
    override = load_landmark_override(landmarks) if landmarks else None
    if name == "procedural":
        model = procedural_model(cfg.seed)
        if override:
            model.landmarks.update(override)
    else:
        model = load_body_model(name, override)
    return model.to(cfg.device)


def _fit(cfg: Config, model: BodyModel, X: torch.Tensor, c: torch.Tensor | None, refine: bool = True,
         betas: torch.Tensor | None = None, sequential: bool = False, warn: bool = True) -> dict[str, torch.Tensor]:
    return kama_fit(model, X.to(cfg.device), None if c is None else c.to(cfg.device),
                    refine_iters=cfg.refine_iters if refine else 0, betas=betas, shape_rounds=cfg.shape_rounds,
                    refine_method=cfg.refine_method, noise_mm=cfg.noise_mm, w_betas=cfg.w_betas, w_pose=cfg.w_pose,
                    w_anchor=cfg.w_anchor,
                    pose_std=cfg.pose_std, betas_std=cfg.betas_std, shape_iters=cfg.shape_iters,
                    shape_damping=cfg.shape_damping, sequential=sequential, warn=warn)


def read_keypoints(path: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Keypoints from ``.npy`` ((26, 3), (B, 26, 3), or (B, 26, 4) with confidence last) or ``.json``
    (``{"keypoints": [...], "confidence": [...]}`` or a bare nested list), metres."""
    p = require_file(path, "keypoint file")
    conf = None
    try:
        suffix = p.suffix.lower()  # KEYS.NPY was refused as "must be .npy or .json"
        if suffix == ".npy":
            try:
                arr = np.load(p, allow_pickle=False)
            except (ValueError, EOFError, OSError) as e:  # an empty file is an EOFError
                if p.stat().st_size and not p.read_bytes()[:6] == b"\x93NUMPY":  # numpy's advice was about pickles
                    raise DataError(f"keypoint file {p} is not a .npy file (no NumPy header); save the array "
                                    "with numpy.save") from None
                raise DataError(f"corrupt keypoint file {p}: {str(e).splitlines()[0] if str(e) else 'empty'}") from None
            if not isinstance(arr, np.ndarray):  # an .npz archive under a .npy name: np.load gives an NpzFile
                arr.close()
                raise DataError(f"keypoint file {p} is an .npz archive, not one .npy array; save the (B, 26, 3) "
                                "array with numpy.save")
            if arr.dtype.kind not in "iuf":
                raise DataError(f"keypoint file {p} holds {arr.dtype} values; expected numbers (metres)")
        elif suffix == ".json":
            try:
                data = json.loads(p.read_text(encoding="utf-8-sig"))  # a byte-order mark was "not valid JSON"
            except ValueError as e:
                raise DataError(f"{p} is not valid JSON: {e}") from None
            if isinstance(data, dict):
                if "keypoints" not in data:
                    raise DataError(f"{p}: expected a 'keypoints' entry")
                arr = np.asarray(data["keypoints"], dtype=np.float64)
                conf = np.asarray(data["confidence"], dtype=np.float64) if "confidence" in data else None
            else:
                arr = np.asarray(data, dtype=np.float64)
        else:
            raise DataError(f"keypoint file must be .npy or .json, got {p.name}")
        arr = np.asarray(arr, dtype=np.float64)
    except (ValueError, TypeError) as e:  # strings ("confidence": "high") or ragged lists
        raise DataError(f"keypoint file {p} does not hold numeric arrays of (B, 26, 3) keypoints and (B, 26) "
                        f"confidence: {str(e).splitlines()[0]}") from None
    given = arr.shape, None if conf is None else conf.shape  # the shapes as in the file, for the messages
    if arr.ndim == 2:
        arr = arr[None]
    if conf is not None and conf.ndim == 1:
        conf = conf[None]
    if arr.ndim != 3 or arr.shape[1] != NUM_KEYPOINTS or arr.shape[2] not in (3, 4):
        raise InputError(f"{p}: keypoints must be (26, 3), (B, 26, 3) or (B, 26, 4), got {given[0]}")
    if arr.shape[0] == 0:
        raise InputError(f"{p} holds no bodies (shape {arr.shape})")
    if arr.shape[2] == 4:
        if conf is not None:  # the JSON's own "confidence" entry was dropped for the fourth column without a word
            raise InputError(f"{p}: the keypoints carry a fourth (confidence) column and a 'confidence' entry too; "
                             "give one of them")
        arr, conf = arr[..., :3], arr[..., 3]
    X = torch.as_tensor(arr, dtype=torch.float32)
    c = torch.as_tensor(conf, dtype=torch.float32) if conf is not None else torch.ones(X.shape[:2])
    if c.shape != X.shape[:2]:
        raise InputError(f"{p}: confidence must be (B, 26) like the keypoints ({tuple(X.shape[:2])} here), got "
                         f"{given[1]}")
    return X, c  # NaN stays NaN: the fit refuses it unless its confidence is 0 (check_keypoints)


def write_obj(path: Path, vertices: torch.Tensor, faces: torch.Tensor) -> Path:
    """A Wavefront .obj of one mesh: vertices (V, 3), faces (F, 3) 0-based."""
    lines = [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices.tolist()]
    lines += [f"f {a + 1} {b + 1} {c + 1}" for a, b, c in faces.tolist()]
    path.write_text("\n".join(lines) + "\n")
    return path


def plot_fit(path: Path, vertices: torch.Tensor, target: torch.Tensor, fitted: torch.Tensor,
             conf: torch.Tensor, title: str) -> Path:
    """Front and side views: mesh vertices (grey), target keypoints (red), fitted keypoints (blue)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    v, t, f, m = vertices.cpu().numpy(), target.cpu().numpy(), fitted.cpu().numpy(), conf.cpu().numpy() > 0
    fig, axes = plt.subplots(1, 2, figsize=(8, 5))
    for ax, (a, b, name) in zip(axes, ((0, 1, "front (x, y)"), (2, 1, "side (z, y)"))):
        ax.scatter(v[:, a], v[:, b], s=1, c="0.6")
        ax.scatter(t[m, a], t[m, b], s=18, c="red", label="keypoints")
        ax.scatter(f[:, a], f[:, b], s=14, c="blue", marker="x", label="fitted")
        ax.set_aspect("equal")
        ax.set_title(name, fontsize=9)
    axes[0].legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def _synthetic_bodies(model: BodyModel, n: int, seed: int, noise_mm: float = 0.0) -> dict[str, torch.Tensor]:
    """SYNTHETIC: n random in-limits poses and shapes of ``model`` and their 26 keypoints (+ noise)."""
    g = torch.Generator().manual_seed(seed)
    dt = model.v_template.dtype
    betas = random_betas(n, model.num_betas, generator=g, dtype=dt)
    h = hinge_axes(model.rest_joints(betas))
    pose = torch.stack([random_pose(1, h[i], generator=g, dtype=dt)[0] for i in range(n)])
    transl = torch.randn(n, 3, generator=g, dtype=dt) * 0.5 + torch.tensor([0.0, 0.0, 3.0], dtype=dt)
    with torch.no_grad():
        kp = regress_keypoints(model, pose, betas, transl)
    noisy = kp + noise_mm * 1e-3 * torch.randn(kp.shape, generator=g, dtype=dt)
    return {"pose": pose, "betas": betas, "transl": transl, "keypoints": noisy, "clean": kp}


def _check_synth_options(cfg: Config, *, bodies: int = 0, noise_mm: float = 0.0, **_: Any) -> int:
    """The number of bodies synth draws, its options checked (also by ``--dry-run``)."""
    n = bodies or cfg.demo_bodies
    if n < 1 or not (math.isfinite(noise_mm) and noise_mm >= 0):  # NaN / Inf wrote all-NaN / Inf keypoints
        raise InputError(f"bodies must be >= 1 and noise_mm finite and >= 0, got {n}, {noise_mm}")
    return n


def synth(cfg: Config, run_dir: Path, *, bodies: int = 0, noise_mm: float = 0.0) -> dict[str, Any]:
    """SYNTHETIC keypoints of random bodies of the config's body model (the seeded procedural one by default):
    writes keypoints.npy (B, 26, 3) and truth.npz (pose, betas, transl, and the body model and seed they belong to).

    Args:
        bodies: bodies to draw; 0: the config's ``demo_bodies``.
        noise_mm: standard deviation of the Gaussian noise added to each keypoint coordinate, in millimetres.
    """
    n = _check_synth_options(cfg, bodies=bodies, noise_mm=noise_mm)
    # --set body_model=FILE was ignored (the bodies were always procedural ones); drawn on the CPU whatever the
    # config's device (the paper preset's cuda need not be there to write keypoints)
    model = build(dataclasses.replace(cfg, device="cpu"))
    run_dir = output_dir(run_dir)  # the Python API may pass a str or a folder not made yet
    s = _synthetic_bodies(model, n, cfg.seed + 1, noise_mm)
    np.save(run_dir / "keypoints.npy", s["keypoints"].numpy())
    np.savez(run_dir / "truth.npz", pose=s["pose"].numpy(), betas=s["betas"].numpy(), transl=s["transl"].numpy(),
             body_model=np.array(cfg.body_model), seed=np.array(cfg.seed))
    # betas are coefficients of this body model: the procedural one differs with the seed, so say how to fit it
    same = (f"--set seed={cfg.seed}" if cfg.body_model == "procedural" else f"--set body_model={cfg.body_model}")
    kp = run_dir / "keypoints.npy"
    return {"bodies": n, "noise_mm": noise_mm, "keypoints": str(kp), "body_model": cfg.body_model,
            "fit_with": f"tenfold kama fit --keypoints {kp} {same}"}


def _check_fit_options(cfg: Config, *, keypoints: str = "", **_: Any) -> None:
    """fit needs its keypoints (checked by ``--dry-run`` too)."""
    if not keypoints:
        raise InputError("pass --keypoints FILE (.npy or .json, (B, 26, 3) metres)")


def fit(cfg: Config, run_dir: Path, *, keypoints: str = "", body_model: str = "",
        landmarks: str = "") -> dict[str, Any]:
    """Fit the body model to keypoints (.npy/.json, metres): writes params.npz (every body), mesh_NNN.obj (the first
    8 bodies) and fit.png (body 0). A fit whose keypoint error is large, or keypoints that face backwards (left and
    right swapped, or a mirrored frame), are warned of.

    Args:
        keypoints: ``.npy`` of (26, 3), (B, 26, 3) or (B, 26, 4) with confidence last, or ``.json``
            (``{"keypoints": ..., "confidence": ...}`` or a nested list); metres, in the 26-keypoint order.
        body_model: ``procedural`` or an SMPL-layout ``.npz`` / ``.pkl`` file; empty: the config's.
        landmarks: a ``.json`` such as ``{"nose": 331}`` naming the vertex of any of the 11 surface landmarks,
            in place of the ones the body model's rules pick.
    """
    _check_fit_options(cfg, keypoints=keypoints)
    X, c = read_keypoints(keypoints)
    model = build(cfg, body_model, landmarks)
    run_dir = output_dir(run_dir)  # the Python API may pass a str or a folder not made yet
    t0 = time.process_time()
    out = _fit(cfg, model, X, c)
    cpu = time.process_time() - t0
    np.savez(run_dir / "params.npz", pose=out["pose"].cpu().numpy(), betas=out["betas"].cpu().numpy(),
             transl=out["transl"].cpu().numpy(), residual=out["residual"].cpu().numpy(),
             degenerate=out["degenerate"].cpu().numpy(), keypoint_names=np.array(KEYPOINT_NAMES))
    meshes = min(X.shape[0], MAX_MESHES)
    for i in range(meshes):
        write_obj(run_dir / f"mesh_{i:03d}.obj", out["vertices"][i].cpu(), model.faces.cpu())
    plot_fit(run_dir / "fit.png", out["vertices"][0], X[0], out["keypoints"][0], c[0], "KAMA fit, body 0")
    seen = c > 0
    res = out["residual"].cpu()  # (kama_fit warned of doubtful fits: a large error, keypoints facing backwards)
    return {"bodies": int(X.shape[0]), "keypoint_error_mm": float(res[seen].mean() * 1e3),
            "max_keypoint_error_mm": float(res.max() * 1e3), "cpu_ms_per_body": 1e3 * cpu / X.shape[0],
            "straight_limbs": int(out["degenerate"].sum()), "refine_iters": cfg.refine_iters,
            "meshes": f"mesh_000 to mesh_{meshes - 1:03d}.obj: the first {meshes} of {X.shape[0]} bodies (params.npz "
                      "holds every body)"}


MAX_MESHES = 8  # OBJ files written by fit: a 1,000-body batch would write 0.5 GB of meshes
synth.check_options = _check_synth_options  # the CLI runs it before --dry-run prints
fit.check_options = _check_fit_options


def bvh(cfg: Config, run_dir: Path, *, file: Annotated[str, tyro.conf.Positional] = "", fps: float = 30.0,
        max_frames: int = 0, shared_shape: bool = True, body_model: str = "", scale: float = 1.0,
        mapping: str = "") -> dict[str, Any]:
    """Fit every frame of a BVH file (default: the CMU walk in the shared data) from the keypoints its
    skeleton has. ``shared_shape``: one beta for the sequence (median of the per-frame fits).

    Args:
        file: the ``.bvh`` file (CMU skeleton names); empty: the CMU walk in the shared data.
        fps: frame rate to fit at (the file's rate divided by a whole step); 0: every frame.
        max_frames: fit at most this many frames; 0: all.
        shared_shape: one shape (betas) for the whole sequence, the median of a first per-frame fit.
        body_model: ``procedural`` or an SMPL-layout ``.npz`` / ``.pkl`` file; empty: the config's.
        scale: metres per unit of the file: 1 for metres, 0.01 for centimetres, 0.001 for millimetres, 0.0254 for
            inches.
        mapping: a ``.json`` of ``{keypoint name: BVH joint name}`` for a skeleton without CMU's joint names; empty:
            CMU's (``tenfold.kama.mocap.CMU_MAP``).
    """
    path = file or str(data_root() / CMU_BVH)
    mp = None
    if mapping:
        try:
            mp = json.loads(require_file(mapping, "BVH mapping file").read_text(encoding="utf-8-sig"))
        except ValueError as e:
            raise DataError(f"{mapping} is not valid JSON: {e}") from None
        if not isinstance(mp, dict) or not mp:
            raise DataError(f"{mapping}: expected a JSON object {{keypoint name: BVH joint name}}")
    X, c, used_fps = bvh_keypoints(path, fps, max_frames, mapping=mp, scale=scale)
    try:
        check_keypoints(X, c)
    except InputError as e:  # the fit's advice on units ("divide centimetres by 100") is --scale here
        if "KAMA takes metres" not in str(e) or " span " not in str(e):  # (not for collapsed keypoints)
            raise
        raise InputError(f"{path}: {e}; for a BVH in centimetres, millimetres or inches pass --scale 0.01, 0.001 or "
                         "0.0254") from None
    model = build(cfg, body_model)
    run_dir = output_dir(run_dir)  # the Python API may pass a str or a folder not made yet
    t0 = time.process_time()
    w0 = time.perf_counter()
    betas = None
    if shared_shape:
        first = _fit(cfg, model, X, c, refine=False, betas=None, warn=False)  # only its shapes are used
        betas = first["betas"].median(0).values.expand_as(first["betas"]).contiguous()
    out = _fit(cfg, model, X, c, betas=betas, sequential=True)  # a straight limb keeps the previous frame's twist
    cpu, wall = time.process_time() - t0, time.perf_counter() - w0
    res = out["residual"].cpu()
    seen = c > 0
    v = out["vertices"].cpu()
    acc = (v[2:] - 2 * v[1:-1] + v[:-2]).norm(dim=-1).mean() * used_fps ** 2 if v.shape[0] > 2 else torch.tensor(0.0)
    np.savez(run_dir / "params.npz", pose=out["pose"].cpu().numpy(), betas=out["betas"].cpu().numpy(),
             transl=out["transl"].cpu().numpy(), residual=res.numpy(), fps=used_fps)
    write_obj(run_dir / "mesh_000.obj", v[0], model.faces.cpu())
    plot_fit(run_dir / "frame_000.png", v[0], X[0], out["keypoints"][0].cpu(), c[0], f"{Path(path).name}, frame 0")
    per_frame = (res * seen).sum(1) / seen.sum(1)
    return {"frames": int(X.shape[0]), "fps_of_sequence": used_fps, "keypoints_used": int(seen[0].sum()),
            "keypoint_error_mm": float(per_frame.mean() * 1e3), "max_frame_error_mm": float(per_frame.max() * 1e3),
            "frames_per_second": X.shape[0] / wall, "cpu_ms_per_frame": 1e3 * cpu / X.shape[0],
            "vertex_acceleration_m_s2": float(acc), "refine_iters": cfg.refine_iters}


def demo(run_dir: Path) -> Section:
    """SYNTHETIC procedural bodies (seeded) fitted analytically and refined, plus real CMU mocap frames."""
    from tenfold.core.metrics import mpjpe

    cfg = Config()
    run_dir = Path(run_dir)
    model = procedural_model(cfg.seed)
    s = _synthetic_bodies(model, cfg.demo_bodies, 1, noise_mm=10.0)
    metrics: dict[str, Any] = {"bodies": cfg.demo_bodies, "keypoint_noise_mm": 10.0}
    with torch.no_grad():
        gt = model(s["pose"], s["betas"], s["transl"])["joints"]
    for name, refine in (("analytic", False), ("analytic+refine", True)):
        t0 = time.process_time()
        out = _fit(cfg, model, s["keypoints"], None, refine=refine)
        metrics[f"{name}_cpu_ms_per_body"] = round(1e3 * (time.process_time() - t0) / cfg.demo_bodies, 2)
        # pelvis-relative, as the README's and the benchmark's MPJPE (it included the translation error)
        metrics[f"{name}_mpjpe_mm"] = round(float(mpjpe(out["joints"] - out["joints"][:, :1],
                                                        gt - gt[:, :1]).mean()) * 1e3, 2)
    fig = plot_fit(run_dir / "kama_fit.png", out["vertices"][0], s["keypoints"][0], out["keypoints"][0],
                   torch.ones(NUM_KEYPOINTS), "SYNTHETIC procedural body, 10 mm keypoint noise")
    figs = [fig]
    bvh_path = data_root() / CMU_BVH
    if bvh_path.is_file():
        sub = run_dir / "bvh"
        sub.mkdir(exist_ok=True)
        m = bvh(cfg, sub, max_frames=30)
        metrics.update({"cmu_frames": m["frames"], "cmu_keypoint_error_mm": round(m["keypoint_error_mm"], 2),
                        "cmu_frames_per_second": round(m["frames_per_second"], 1)})
        figs.append(sub / "frame_000.png")
    return Section("kama: analytic body-mesh articulation from 3D keypoints",
                   "SYNTHETIC procedural SMPL-layout body (seeded; not SMPL) at 10 mm keypoint noise: MPJPE of "
                   "the 24 joints for the analytic fit and with 5 LM refinement steps; then the first 30 frames "
                   "(30 fps) of the real CMU walk (subject 131) from its 16 mapped keypoints.", metrics, figs)


def smoke_options(verb: str, earlier_run_dirs: dict[str, Path]) -> dict[str, Any]:
    """Options each verb needs in the end-to-end smoke test."""
    if verb == "synth":
        return {"bodies": 4, "noise_mm": 5.0}
    if verb == "fit":
        return {"keypoints": str(earlier_run_dirs["synth"] / "keypoints.npy")}
    if verb == "bvh":
        return {"max_frames": 6}
    return {}
