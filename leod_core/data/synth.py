"""Synthetic event camera: moving textured cars and pedestrians, written in RVT's raw layout.

A scene is a static low-contrast background with sprites (class 0 car-like, class 1 pedestrian-like)
moving along smooth trajectories, entering and leaving the view and occluding each other by depth.
Log-intensity frames are rendered every ``time_step_us``; a pixel emits one event each time its
log-intensity moves by its contrast threshold away from its reference (timestamps interpolated within the
step), plus uniform noise events and hot pixels. Boxes of visible objects are labelled at 4 Hz.
Each sequence has its own RNG derived from (seed, split, index), so sequences are independent.
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numba
import numpy as np
from tqdm import tqdm

from leod_core.data.atomic import write_text_atomic
from leod_core.data.formats import (PROPHESEE_BBOX_DTYPE, SPLITS, RawEvents, raw_paths, write_raw_boxes,
                                    write_raw_events)

log = logging.getLogger(__name__)

SUMMARY_FILE = "summary.json"
CAR, PEDESTRIAN = 0, 1
_PAD = 1  # empty sprite border (pixels) so sprite edges fade to transparent under bilinear sampling
_SHAPE_ORIGIN = _PAD - 0.5  # sprite coordinate of the shape's top-left corner (pixel centres at integers)
_COVERED = 0.5  # alpha at which a pixel counts as showing the object (labels, occlusion)
_INITIAL_EVENT_CAPACITY = 1 << 16  # rows of the event buffer before it first grows
_MAX_PARTS = 4  # parts per drawing (car: body, cabin, windows, wheels; pedestrian: legs, torso, head)


@dataclass(frozen=True)
class SynthConfig:
    """All knobs of the synthetic camera. Units: pixels, µs, Hz, s; intensities are linear in (0, ∞)."""

    seed: int = 0
    height: int = 64  # sensor rows (px); a tiny RVT trains on CPU at 64 × 96
    width: int = 96  # sensor columns (px)
    duration_s: float = 8.0  # length of every sequence (s)
    num_train: int = 16  # sequences per split
    num_val: int = 4
    num_test: int = 4
    time_step_us: int = 2000  # rendering step (µs); must divide label_period_us
    label_period_us: int = 250_000  # labels at 4 Hz like Gen1, first one at t = label_period_us
    # sensor
    contrast_threshold: float = 0.2  # log-intensity change per event
    threshold_sigma: float = 0.02  # per-pixel std of the threshold (log units)
    threshold_min: float = 0.05  # lower bound of any pixel's threshold (log units)
    noise_rate_hz: float = 0.1  # uniform background-activity events per pixel per second
    hot_pixels: int = 2  # pixels firing at hot_pixel_rate_hz
    hot_pixel_rate_hz: float = 20.0
    # background
    background_mean: float = 0.4  # mean linear intensity
    background_contrast: float = 0.05  # std of the background's log-intensity texture
    background_cell_px: int = 6  # spatial scale of the background texture (px)
    # object population
    initial_objects_mean: float = 2.5  # Poisson mean of objects in view at t = 0
    arrival_rate_hz: float = 0.5  # objects entering through the left/right edge per second (Poisson)
    car_probability: float = 0.6  # probability that an object is a car (else a pedestrian); cars
    #                               leave the view faster, 0.6 balances the labelled boxes of both classes
    outside_fraction: float = 0.25  # objects start with at most this fraction of their width/height
    #                                 outside the view (entering objects start fully outside left/right)
    # object shapes
    car_width_px: tuple[float, float] = (14.0, 30.0)  # uniform range of car widths
    car_aspect: tuple[float, float] = (0.45, 0.65)  # car height / width
    ped_height_px: tuple[float, float] = (12.0, 24.0)  # uniform range of pedestrian heights
    ped_aspect: tuple[float, float] = (0.42, 0.55)  # pedestrian width / height
    supersample: int = 4  # sub-pixels per pixel side when drawing sprites (anti-aliasing)
    walk_frames: int = 4  # pedestrian leg-animation frames per gait cycle
    stride_per_height: float = 0.8  # distance walked per gait cycle / pedestrian height
    leg_swing: float = 0.15  # horizontal foot excursion / pedestrian width
    # object appearance
    object_contrast: tuple[float, float] = (0.4, 1.2)  # |log(object / background)| range of the base tone
    part_contrast: float = 0.4  # std of each part's log-intensity around the base tone
    texture_contrast: float = 0.1  # std of per-pixel log-intensity texture on objects
    # motion
    car_speed_px_s: tuple[float, float] = (4.0, 40.0)  # log-uniform initial speed range (px/s)
    ped_speed_px_s: tuple[float, float] = (2.0, 14.0)
    heading_spread_rad: float = 0.3  # std of the heading around horizontal (rad)
    max_turn_rad_s: float = 0.15  # uniform |turn rate| bound (rad/s): gentle curvature
    max_accel_per_s: float = 0.15  # uniform |a| bound, speed(t) = speed0 · exp(a t) (1/s)
    # labels
    min_visible_fraction: float = 0.2  # skip objects showing less than this fraction of their area
    min_visible_px: int = 10  # ... or fewer pixels than this

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8 or self.duration_s <= 0 or self.time_step_us <= 0:
            raise ValueError(f"SynthConfig: bad size or duration: {self}")
        if self.label_period_us % self.time_step_us:
            raise ValueError("SynthConfig: time_step_us must divide label_period_us")

    @property
    def duration_us(self) -> int:
        return int(round(self.duration_s * 1e6))

    def num_sequences(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]


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


def sequence_name(split: str, index: int) -> str:
    return f"synth_{split}_{index:03d}"


def _rng(config: SynthConfig, split: str, index: int) -> np.random.Generator:
    """The RNG of one sequence, independent of every other (seed, split, index)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}, expected one of {SPLITS}")
    return np.random.default_rng(np.random.SeedSequence(config.seed, spawn_key=(SPLITS.index(split), index)))


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
    """Sample objects (Poisson many in view at t = 0, Poisson arrivals later) and pack them for rendering."""
    num_frames = config.duration_us // config.time_step_us + 1
    n_init = rng.poisson(config.initial_objects_mean)
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


@numba.njit(cache=True)
def _splat(prem, alpha, x0, y0, out):
    """Composite one sprite frame (prem, alpha: [SH, SW]) with top-left at (x0, y0) over ``out`` [H, W]."""
    sh, sw = alpha.shape
    height, width = out.shape
    for py in range(max(0, int(np.floor(y0))), min(height, int(np.floor(y0)) + sh + 1)):
        v = py - y0
        iv = int(np.floor(v))
        fv = v - iv
        for px in range(max(0, int(np.floor(x0))), min(width, int(np.floor(x0)) + sw + 1)):
            u = px - x0
            iu = int(np.floor(u))
            fu = u - iu
            a = c = 0.0
            for dv in range(2):
                wv = fv if dv else 1.0 - fv
                for du in range(2):
                    wuv = wv * (fu if du else 1.0 - fu)
                    if 0 <= iv + dv < sh and 0 <= iu + du < sw:
                        a += wuv * alpha[iv + dv, iu + du]
                        c += wuv * prem[iv + dv, iu + du]
            if a > 0.0:
                out[py, px] = c + (1.0 - a) * out[py, px]


@numba.njit(cache=True)
def _render(background, prem, alpha, frame, ox, oy, order, out):
    """Linear-intensity image [H, W] at one step: background, then sprites back to front."""
    out[:, :] = background
    for j in order:
        if not np.isnan(ox[j]):
            _splat(prem[j, frame[j]], alpha[j, frame[j]], ox[j], oy[j], out)


@numba.njit(cache=True)
def _span(previous, current, size, limit):
    """Pixel range [lo, hi) a sprite of ``size`` px touches at offset ``previous`` or ``current`` (NaN: absent)."""
    lo, hi = limit, 0
    for offset in (previous, current):
        if not np.isnan(offset):
            lo = min(lo, max(0, int(np.floor(offset))))
            hi = max(hi, min(limit, int(np.floor(offset)) + size + 1))
    return lo, hi


@numba.njit(cache=True)
def _emit(buf, n, x, y, level, before, ref, c, t0, dt_us):
    """Append the events of pixel (x, y) whose log-intensity went from ``before`` to ``level`` in the step
    starting at ``t0``; return (buffer, event count, new reference). Crossing times are interpolated."""
    count = int(abs(level - ref) / c)
    if n + count > buf.shape[0]:
        grown = np.empty((2 * (n + count), 4), np.int64)
        grown[:n] = buf[:n]
        buf = grown
    sign = 1.0 if level > ref else -1.0
    for m in range(1, count + 1):
        frac = (ref + sign * m * c - before) / (level - before) if level != before else 1.0
        buf[n, 0] = t0 + int(round(min(max(frac, 0.0), 1.0) * dt_us))
        buf[n, 1], buf[n, 2], buf[n, 3] = x, y, 1 if sign > 0 else 0
        n += 1
    return buf, n, ref + sign * count * c


@numba.njit(cache=True)
def _simulate(background, prem, alpha, frame, ox, oy, order, threshold, dt_us):
    """Contrast-threshold events of the rendered video: int64 [E, 4] rows (t µs, x, y, p), unsorted.

    Only pixels under a sprite now or at the previous step can change (the background is static);
    visiting a pixel twice in one step is harmless since its reference is then already within threshold.
    """
    height, width = background.shape
    lin = np.empty_like(background)
    _render(background, prem, alpha, frame[0], ox[0], oy[0], order, lin)
    prev = np.log(lin)
    ref = prev.copy()
    buf, n = np.empty((_INITIAL_EVENT_CAPACITY, 4), np.int64), 0
    for k in range(1, ox.shape[0]):
        _render(background, prem, alpha, frame[k], ox[k], oy[k], order, lin)
        for j in range(ox.shape[1]):
            y0, y1 = _span(oy[k - 1, j], oy[k, j], alpha.shape[2], height)
            x0, x1 = _span(ox[k - 1, j], ox[k, j], alpha.shape[3], width)
            for py in range(y0, y1):
                for px in range(x0, x1):
                    level, before = np.log(lin[py, px]), prev[py, px]
                    prev[py, px] = level
                    if abs(level - ref[py, px]) >= threshold[py, px]:
                        buf, n, ref[py, px] = _emit(buf, n, px, py, level, before, ref[py, px],
                                                    threshold[py, px], (k - 1) * dt_us, dt_us)
    return buf[:n]


def _noise_events(config: SynthConfig, rng: np.random.Generator) -> np.ndarray:
    """Uniform background activity plus hot pixels: int64 [E, 4] rows (t µs, x, y, p)."""
    num_pixels = config.height * config.width
    n_noise = rng.poisson(config.noise_rate_hz * num_pixels * config.duration_s)
    hot = rng.integers(num_pixels, size=config.hot_pixels)
    pixel = np.concatenate([rng.integers(num_pixels, size=n_noise),
                            np.repeat(hot, rng.poisson(config.hot_pixel_rate_hz * config.duration_s, size=len(hot)))])
    t = rng.integers(config.duration_us, size=len(pixel))
    return np.stack([t, pixel % config.width, pixel // config.width, rng.integers(2, size=len(pixel))], axis=1)


def _visible_boxes(config: SynthConfig, scene: _Scene, k: int) -> list[tuple[int, float, float, float, float]]:
    """(object, x, y, w, h) of objects visible at frame ``k``: box clipped to the view and to visible pixels."""
    occupied = np.zeros((config.height, config.width), bool)
    boxes = []
    for j in scene.order[::-1]:  # front to back
        if np.isnan(scene.ox[k, j]):
            continue
        coverage = np.zeros((config.height, config.width))
        sprite = scene.alpha[j, scene.frame[k, j]]
        _splat(sprite, sprite, scene.ox[k, j], scene.oy[k, j], coverage)
        covered = coverage >= _COVERED
        visible = covered & ~occupied
        occupied |= covered
        if visible.sum() < max(config.min_visible_px, config.min_visible_fraction * (sprite >= _COVERED).sum()):
            continue
        rows, cols = np.flatnonzero(visible.any(axis=1)), np.flatnonzero(visible.any(axis=0))
        left, top = scene.ox[k, j] + _SHAPE_ORIGIN, scene.oy[k, j] + _SHAPE_ORIGIN
        x1, y1 = max(left, cols[0] - 0.5, 0.0), max(top, rows[0] - 0.5, 0.0)
        x2 = min(left + scene.size[j, 0], cols[-1] + 0.5, config.width - 1.0)
        y2 = min(top + scene.size[j, 1], rows[-1] + 0.5, config.height - 1.0)
        if x2 > x1 and y2 > y1:
            boxes.append((int(j), x1, y1, x2 - x1, y2 - y1))
    return sorted(boxes)


def _labels(config: SynthConfig, scene: _Scene) -> np.ndarray:
    """Boxes (PROPHESEE_BBOX_DTYPE, sorted by t then track) every label_period_us from label_period_us on."""
    rows = [(t, x, y, w, h, scene.class_id[j], j, 1.0)
            for t in range(config.label_period_us, config.duration_us, config.label_period_us)
            for j, x, y, w, h in _visible_boxes(config, scene, t // config.time_step_us)]
    boxes = np.zeros(len(rows), dtype=PROPHESEE_BBOX_DTYPE)  # zeroed: the dtype has 4 padding bytes
    for name, column in zip(PROPHESEE_BBOX_DTYPE.names, zip(*rows)):
        boxes[name] = column
    return boxes


def generate_sequence(config: SynthConfig, split: str, index: int) -> tuple[RawEvents, np.ndarray]:
    """Simulate sequence ``index`` of ``split``: events (sorted by t) and boxes (PROPHESEE_BBOX_DTYPE). No I/O."""
    rng = _rng(config, split, index)
    background = _background(config, rng)
    threshold = np.maximum(config.contrast_threshold + config.threshold_sigma * rng.normal(size=background.shape),
                           config.threshold_min)
    scene = _scene(config, rng)
    events = np.concatenate([_simulate(background, scene.prem, scene.alpha, scene.frame, scene.ox, scene.oy,
                                       scene.order, threshold, config.time_step_us),
                             _noise_events(config, rng)])
    events = events[np.argsort(events[:, 0], kind="stable")]
    raw = RawEvents(x=events[:, 1].astype(np.uint16), y=events[:, 2].astype(np.uint16),
                    p=events[:, 3].astype(np.int8), t=events[:, 0].copy(), height=config.height, width=config.width)
    return raw, _labels(config, scene)


def _write_sequence(out_dir: Path, config: SynthConfig, split: str, index: int) -> tuple[str, int, int, int]:
    """Generate and write one sequence; return (split, events, boxes, bytes written)."""
    events, boxes = generate_sequence(config, split, index)
    events_path, boxes_path = raw_paths(out_dir / split, sequence_name(split, index))
    write_raw_events(events_path, events)
    write_raw_boxes(boxes_path, boxes)
    return split, len(events.t), len(boxes), events_path.stat().st_size + boxes_path.stat().st_size


def generate_dataset(out_dir: Path, config: SynthConfig, workers: int = 1, progress: bool = True) -> dict:
    """Write every split's sequences in RVT's raw layout under ``out_dir``, then ``out_dir/summary.json``.

    Returns (and writes) ``{"splits": {split: {"sequences", "events", "boxes", "bytes"}}, "total_bytes": int,
    "config": {...}}``; the summary file is written last, so it marks a complete dataset.
    """
    out_dir = Path(out_dir)
    jobs = [(split, i) for split in SPLITS for i in range(config.num_sequences(split))]
    summary = {split: {"sequences": 0, "events": 0, "boxes": 0, "bytes": 0} for split in SPLITS}
    write = partial(_write_sequence, out_dir, config)
    splits, indices = [s for s, _ in jobs], [i for _, i in jobs]
    with ProcessPoolExecutor(max_workers=workers) if workers > 1 else contextlib.nullcontext() as pool:
        results = pool.map(write, splits, indices) if pool else map(write, splits, indices)
        for split, n_events, n_boxes, n_bytes in tqdm(results, total=len(jobs), disable=not progress,
                                                      desc="synth", unit="seq"):
            stats = summary[split]
            stats["sequences"] += 1
            stats["events"] += n_events
            stats["boxes"] += n_boxes
            stats["bytes"] += n_bytes
    total = sum(s["bytes"] for s in summary.values())
    for split, s in summary.items():
        log.info("synth %s: %d sequences, %d events, %d boxes, %.1f MB", split, s["sequences"], s["events"],
                 s["boxes"], s["bytes"] / 1e6)
    log.info("synth: wrote %d sequences (%dx%d, %.1f s each) to %s, %.1f MB in total", len(jobs),
             config.height, config.width, config.duration_s, out_dir, total / 1e6)
    result = {"splits": summary, "total_bytes": total, "config": dataclasses.asdict(config)}
    write_text_atomic(out_dir / SUMMARY_FILE, json.dumps(result, indent=2, sort_keys=True))
    return result

