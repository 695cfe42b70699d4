"""Settings of the synthetic event camera (:class:`SynthConfig`), re-exported by :mod:`leod_core.data.synth`."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

#: Event file formats ``leod synth --format`` writes: :data:`leod_core.data.recordings.FORMATS`, spelled out here
#: so that ``leod --help`` need not import the readers.
EVENT_FORMATS = ("h5", "dat", "evt2", "evt3")
#: RVT's ``{seq}_td.dat.h5``, what ``leod synth`` writes unless asked otherwise.
DEFAULT_EVENT_FORMAT = "h5"
#: Where ``leod synth`` puts the sequences: ``splits`` = RVT's ``train/ val/ test/`` folders, ``flat`` = every
#: sequence of every split in one folder (a camera's folder of recordings, for the workflow's ``recordings`` source).
SPLITS_LAYOUT, FLAT_LAYOUT = "splits", "flat"
LAYOUTS = (SPLITS_LAYOUT, FLAT_LAYOUT)
DEFAULT_LAYOUT = SPLITS_LAYOUT
#: The split that may hold unlabeled sequences (:attr:`SynthConfig.unlabeled_fraction`): val and test need labels.
UNLABELED_SPLIT = "train"


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
    min_initial_objects: int = 0  # at least this many objects in view at t = 0 (raises the Poisson draw)
    arrival_rate_hz: float = 0.5  # objects entering through the left/right edge per second (Poisson)
    car_probability: float = 0.6  # probability that an object is a car (else a pedestrian); cars
    #                               leave the view faster, 0.6 balances the labelled boxes of both classes
    outside_fraction: float = 0.25  # objects start with at most this fraction of their width/height
    #                                 outside the view (entering objects start fully outside left/right)
    # object shapes
    car_width_px: tuple[float, float] = (14.0, 30.0)  # uniform range of car widths (a car's longer side)
    car_aspect: tuple[float, float] = (0.45, 0.65)  # car height / width
    ped_height_px: tuple[float, float] = (12.0, 24.0)  # uniform range of pedestrian heights (longer side)
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
    unlabeled_fraction: float = 0.0  # this fraction of the train sequences is written without boxes (unlabeled
    #                                  recordings); which ones: :meth:`unlabeled_indices`

    def __post_init__(self) -> None:
        if self.height < 8 or self.width < 8 or self.duration_s <= 0 or self.time_step_us <= 0:
            raise ValueError(f"SynthConfig: bad size or duration: {self}")
        if self.label_period_us % self.time_step_us:
            raise ValueError("SynthConfig: time_step_us must divide label_period_us")
        for name in ("car_width_px", "ped_height_px"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise ValueError(f"SynthConfig: {name} must be a range 0 < min <= max (px), got {(low, high)}")
        if self.min_initial_objects < 0:
            raise ValueError(f"SynthConfig: min_initial_objects must be >= 0, got {self.min_initial_objects}")
        if not 0 <= self.unlabeled_fraction <= 1:
            raise ValueError(f"SynthConfig: unlabeled_fraction must be in [0, 1], got {self.unlabeled_fraction}")

    @property
    def duration_us(self) -> int:
        return int(round(self.duration_s * 1e6))

    def num_sequences(self, split: str) -> int:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}[split]

    def unlabeled_indices(self, split: str) -> frozenset[int]:
        """Indices of the sequences of ``split`` written without boxes: none outside :data:`UNLABELED_SPLIT`;
        there ``k = round(n f)`` of the ``n`` (``f`` the unlabeled fraction), spread evenly: the centres
        ``floor((j + 1/2) n / k)``, j = 0 .. k-1, of k equal intervals. Nothing random, so every run picks the same."""
        if split != UNLABELED_SPLIT:
            return frozenset()
        n = self.num_sequences(split)
        k = round(n * self.unlabeled_fraction)
        return frozenset((2 * j + 1) * n // (2 * k) for j in range(k))

    def with_object_size(self, min_px: float | None = None, max_px: float | None = None) -> SynthConfig:
        """This config with every object's longer side (car width, pedestrian height) uniform in
        [``min_px``, ``max_px``] (px); a bound left ``None`` keeps each class's own bound. The aspect ranges
        then set the shorter side, so the smallest box of a class is ``min_px × min_px·min(aspect)``."""
        def bounded(current: tuple[float, float]) -> tuple[float, float]:
            return (current[0] if min_px is None else float(min_px), current[1] if max_px is None else float(max_px))

        return dataclasses.replace(self, car_width_px=bounded(self.car_width_px),
                                   ped_height_px=bounded(self.ped_height_px))
