"""What the synthetic camera looks at: a static background texture and car / pedestrian sprites on smooth tracks.

Sampling only (numpy, no events, no I/O); the underscored names are internal to the ``leod_core.data.synth*``
modules. Every draw comes from the sequence's RNG in a fixed order, so a configuration and a seed give one scene.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from leod_core.data.synth_config import SynthConfig

CAR, PEDESTRIAN = 0, 1
_PAD = 1  # empty sprite border (pixels) so sprite edges fade to transparent under bilinear sampling
_SHAPE_ORIGIN = _PAD - 0.5  # sprite coordinate of the shape's top-left corner (pixel centres at integers)
_MAX_PARTS = 4  # parts per drawing (car: body, cabin, windows, wheels; pedestrian: legs, torso, head)


@dataclass(frozen=True)
class _Scene:
    """Sprites and per-step placement of N objects over S+1 frames (frame k at time k·time_step_us)."""

    prem: np.ndarray  # float64 [N, K, SH, SW] premultiplied linear intensity of K animation frames
    alpha: np.ndarray  # float64 [N, K, SH, SW] coverage in [0, 1]
    frame: np.ndarray  # int64 [S+1, N] animation frame shown at each step
    ox: np.ndarray  # float64 [S+1, N] sprite top-left x (px), NaN before the object spawns
    oy: np.ndarray  # float64 [S+1, N]
    size: np.ndarray  # float64 [N, 2] shape width, height (px)
    order: np.ndarray  # int64 [N] draw order, back to front
    class_id: np.ndarray  # uint32 [N]


def _uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    return float(rng.uniform(*bounds))


def _background(config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Static texture: bilinearly upsampled coarse noise, linear intensity float64 [H, W]."""
    cell = config.background_cell_px
    coarse = rng.normal(size=(config.height // cell + 2, config.width // cell + 2))
    v, u = np.arange(config.height) / cell, np.arange(config.width) / cell
    iv, iu = v.astype(int), u.astype(int)
    fv, fu = (v - iv)[:, None], (u - iu)[None, :]
    smooth = ((1 - fv) * (1 - fu) * coarse[np.ix_(iv, iu)] + (1 - fv) * fu * coarse[np.ix_(iv, iu + 1)]
              + fv * (1 - fu) * coarse[np.ix_(iv + 1, iu)] + fv * fu * coarse[np.ix_(iv + 1, iu + 1)])
    smooth = (smooth - smooth.mean()) / max(smooth.std(), np.finfo(float).eps)
    return config.background_mean * np.exp(config.background_contrast * smooth)


def _round_rect(u, v, x0, y0, x1, y1, r):
    """Mask of a rectangle [x0, x1] × [y0, y1] with corner radius r, on sub-pixel coordinates u, v."""
    dx = np.maximum(np.abs(u - (x0 + x1) / 2) - ((x1 - x0) / 2 - r), 0)
    dy = np.maximum(np.abs(v - (y0 + y1) / 2) - ((y1 - y0) / 2 - r), 0)
    return dx ** 2 + dy ** 2 <= r ** 2


# The drawings below place parts at fixed fractions of the object's w × h box: they define the two shapes
# (the classes), they are not tuning knobs.
def _car_parts(u, v, w, h, phase):
    """Car masks (body, cabin, windows, wheels) in a w × h box; fractions are the car's proportions."""
    wheels = ((u - 0.22 * w) ** 2 + (v - 0.8 * h) ** 2 <= (0.2 * h) ** 2) \
        | ((u - 0.78 * w) ** 2 + (v - 0.8 * h) ** 2 <= (0.2 * h) ** 2)
    windows = _round_rect(u, v, 0.28 * w, 0.1 * h, 0.72 * w, 0.42 * h, 0.05 * h) & (np.abs(u - 0.5 * w) > 0.03 * w)
    return [_round_rect(u, v, 0, 0.35 * h, w, 0.85 * h, 0.15 * h),
            _round_rect(u, v, 0.18 * w, 0, 0.82 * w, 0.5 * h, 0.2 * h), windows, wheels]


def _ped_parts(u, v, w, h, phase, swing):
    """Pedestrian masks (legs at gait ``phase`` ∈ [0, 1), torso, head) in a w × h box."""
    hip, foot = 0.58 * h, h
    along = np.clip((v - hip) / (foot - hip), 0, 1)
    offset = swing * w * np.sin(2 * np.pi * phase) * along
    legs = (v >= hip) & ((np.abs(u - 0.32 * w - offset) <= 0.15 * w) | (np.abs(u - 0.68 * w + offset) <= 0.15 * w))
    radius = min(0.12 * h, 0.4 * w)
    head = (u - 0.5 * w) ** 2 + (v - radius) ** 2 <= radius ** 2
    return [legs, _round_rect(u, v, 0, 0.2 * h, w, 0.62 * h, 0.1 * w), head]


def _sprite(config: SynthConfig, rng: np.random.Generator, cls: int, w: float,
            h: float) -> tuple[np.ndarray, np.ndarray]:
    """Anti-aliased textured sprite frames: (premultiplied intensity, alpha), each float64 [K, SH, SW]."""
    s, k = config.supersample, config.walk_frames
    sh, sw = int(np.ceil(h)) + 2 * _PAD, int(np.ceil(w)) + 2 * _PAD
    v, u = np.meshgrid((np.arange(sh * s) + 0.5) / s - 0.5 - _SHAPE_ORIGIN,
                       (np.arange(sw * s) + 0.5) / s - 0.5 - _SHAPE_ORIGIN, indexing="ij")
    parts = _car_parts if cls == CAR else partial(_ped_parts, swing=config.leg_swing)
    base = rng.choice([-1.0, 1.0]) * _uniform(rng, config.object_contrast)
    tones = config.background_mean * np.exp(base + config.part_contrast * rng.normal(size=_MAX_PARTS))
    texture = np.exp(config.texture_contrast * rng.normal(size=(sh, sw)))
    prem, alpha = np.zeros((2, k, sh, sw))
    for f in range(k):
        cover, tone = np.zeros(u.shape), np.zeros(u.shape)
        for mask, value in zip(parts(u, v, w, h, f / k), tones):
            cover[mask], tone[mask] = 1.0, value  # later parts are drawn on top
        alpha[f] = cover.reshape(sh, s, sw, s).mean(axis=(1, 3))
        prem[f] = (cover * tone).reshape(sh, s, sw, s).mean(axis=(1, 3)) * texture
    return prem, alpha


def _trajectory(config: SynthConfig, rng: np.random.Generator, cls: int, start: tuple[float, float],
                direction: float, spawn_step: int, num_frames: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Box top-left x, y (px; NaN before ``spawn_step``) and distance travelled, float64 [S+1] each."""
    dt = config.time_step_us * 1e-6
    lo, hi = config.car_speed_px_s if cls == CAR else config.ped_speed_px_s
    speed0 = np.exp(rng.uniform(np.log(lo), np.log(hi)))
    heading0 = (0.0 if direction > 0 else np.pi) + config.heading_spread_rad * rng.normal()
    turn = rng.uniform(-config.max_turn_rad_s, config.max_turn_rad_s)
    accel = rng.uniform(-config.max_accel_per_s, config.max_accel_per_s)
    tau = np.maximum(np.arange(num_frames) - spawn_step, 0) * dt
    speed, heading = speed0 * np.exp(accel * tau), heading0 + turn * tau
    active = np.arange(num_frames) >= spawn_step
    step = np.where(active, speed * dt, 0.0)[:-1]
    walked = np.concatenate([[0.0], np.cumsum(step)])
    x = start[0] + np.concatenate([[0.0], np.cumsum(step * np.cos(heading[:-1]))])
    y = start[1] + np.concatenate([[0.0], np.cumsum(step * np.sin(heading[:-1]))])
    return np.where(active, x, np.nan), np.where(active, y, np.nan), walked


def _object(config: SynthConfig, rng: np.random.Generator, spawn_step: int, in_view: bool, num_frames: int):
    """One object: class, size (w, h px), sprite (prem, alpha [K, SH, SW]) and its sprite offsets ox, oy
    and animation frame per step ([S+1] each). ``in_view`` places it in the view, else just outside the
    left/right edge it enters through."""
    cls = CAR if rng.random() < config.car_probability else PEDESTRIAN
    if cls == CAR:
        w = _uniform(rng, config.car_width_px)
        h = w * _uniform(rng, config.car_aspect)
    else:
        h = _uniform(rng, config.ped_height_px)
        w = h * _uniform(rng, config.ped_aspect)
    direction, out = rng.choice([-1.0, 1.0]), config.outside_fraction
    y0 = rng.uniform(-out * h, config.height - (1 - out) * h)
    x0 = rng.uniform(-out * w, config.width - (1 - out) * w) if in_view else (-w if direction > 0 else config.width)
    x, y, walked = _trajectory(config, rng, cls, (x0, y0), direction, spawn_step, num_frames)
    frame = (walked / (config.stride_per_height * h) * config.walk_frames).astype(np.int64) % config.walk_frames
    track = (x - _SHAPE_ORIGIN, y - _SHAPE_ORIGIN, frame if cls == PEDESTRIAN else np.zeros_like(frame))
    return cls, (w, h), _sprite(config, rng, cls, w, h), track


def _scene(config: SynthConfig, rng: np.random.Generator) -> _Scene:
    """Sample objects (Poisson many, at least ``min_initial_objects``, in view at t = 0; Poisson arrivals later)
    and pack them for rendering."""
    num_frames = config.duration_us // config.time_step_us + 1
    n_init = max(rng.poisson(config.initial_objects_mean), config.min_initial_objects)
    arrivals = rng.integers(num_frames - 1, size=rng.poisson(config.arrival_rate_hz * config.duration_s))
    spawns = np.concatenate([np.zeros(n_init, np.int64), np.sort(arrivals)])
    objects = [_object(config, rng, spawn, i < n_init, num_frames) for i, spawn in enumerate(spawns)]
    sh = max([sprite[0].shape[1] for _, _, sprite, _ in objects], default=1)
    sw = max([sprite[0].shape[2] for _, _, sprite, _ in objects], default=1)
    prem, alpha = np.zeros((2, len(objects), config.walk_frames, sh, sw))
    for j, (_, _, (p, a), _) in enumerate(objects):
        prem[j, :, :p.shape[1], :p.shape[2]], alpha[j, :, :a.shape[1], :a.shape[2]] = p, a
    ox, oy, frame = (np.stack([o[3][c] for o in objects], axis=1) if objects else np.zeros((num_frames, 0))
                     for c in range(3))
    return _Scene(prem=prem, alpha=alpha, frame=frame.astype(np.int64), ox=ox, oy=oy,
                  size=np.array([o[1] for o in objects], dtype=np.float64).reshape(-1, 2),
                  order=rng.permutation(len(objects)), class_id=np.array([o[0] for o in objects], dtype=np.uint32))
