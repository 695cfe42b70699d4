"""Long recordings: ``leod preprocess`` of 1280x720 EVT 3.0 recordings of growing length (events/s, peak memory,
which must stay flat as the length doubles), and ``leod predict`` frames/s on a recording.

Usage:
  python benchmarks/bench_long_recording.py preprocess [--minutes 2.5 5 10] [--rate 1e6] [--workdir DIR]
  python benchmarks/bench_long_recording.py predict [--camera gen1] [--seconds 60] [--rate 5e5] [--size tiny]

``preprocess`` writes, per length, an EVT 3.0 recording of the 1Mpx camera's 1280x720 sensor (events uniform over
the sensor at ``--rate`` events/s, written chunk by chunk, so the writer's memory is bounded too) and a
``_bbox.npy`` with one box per label at 30 Hz (RVT's 1Mpx label rate), then preprocesses it with the ``gen4``
preset in a fresh process and reports that process's wall time and peak resident memory (``ru_maxrss``), and its
resident memory after the imports (the baseline). ``predict`` writes a recording of the camera's sensor and runs
``leod predict``'s library call with a randomly initialised RVT of ``--size`` on it (fp32, batch 1, the camera's L),
reporting frames/s and events/s of the stream (the model and the building of frames from events together; checkpoint
loading excluded) and the share of the time spent building frames. Prints Markdown tables for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_common import load_average, print_markdown_table, provenance
from leod_core.data.cameras import get_camera
from leod_core.data.formats import PROPHESEE_BBOX_DTYPE, RawEvents, write_raw_boxes
from leod_core.data.recordings import write_evt3_chunks

CPU = torch.device("cpu")
SCRIPT = "bench_long_recording.py"
SEQ = "rec"
#: RVT's 1Mpx label rate (the gen4 preset derives its 100 ms label period from it).
LABEL_RATE_HZ = 30
#: One labeled car per label frame, inside the gen4 label filter (sensor pixels: x, y, w, h).
BOX_XYWH = (600.0, 300.0, 200.0, 150.0)
CAR_CLASS = 2


def second_of_events(rng: np.random.Generator, second: int, rate_hz: float, sensor_hw: tuple[int, int]
                     ) -> RawEvents:
    """``rate_hz`` events uniform over the sensor during second ``second`` (µs timestamps, sorted)."""
    count = int(rate_hz)
    height, width = sensor_hw
    t = np.sort(rng.integers(second * 1_000_000, (second + 1) * 1_000_000, count)).astype(np.int64)
    return RawEvents(x=rng.integers(0, width, count).astype(np.uint16), y=rng.integers(0, height, count).astype(
        np.uint16), p=rng.integers(0, 2, count).astype(np.int8), t=t, height=height, width=width)


def write_recording_of(path: Path, seconds: float, rate_hz: float, sensor_hw: tuple[int, int], seed: int = 0) -> int:
    """An EVT 3.0 recording of ``seconds`` (whole seconds) at ``rate_hz``; returns its event count."""
    rng = np.random.default_rng(seed)
    whole = int(np.ceil(seconds))
    write_evt3_chunks(path, (second_of_events(rng, s, rate_hz, sensor_hw) for s in range(whole)), sensor_hw)
    return whole * int(rate_hz)


def write_labels(path: Path, seconds: float) -> None:
    """One box per label frame at :data:`LABEL_RATE_HZ` from 0.5 s to the end (Prophesee boxes)."""
    times = np.arange(500_000, int(seconds * 1e6), 1_000_000 // LABEL_RATE_HZ, dtype=np.int64)
    boxes = np.zeros(len(times), dtype=PROPHESEE_BBOX_DTYPE)
    boxes["t"] = times
    boxes["x"], boxes["y"], boxes["w"], boxes["h"] = BOX_XYWH
    boxes["class_id"] = CAR_CLASS
    boxes["class_confidence"] = 1.0
    write_raw_boxes(path, boxes)


def worker(raw_dir: str, out_dir: str) -> None:
    """Preprocess the one train sequence of ``raw_dir`` (gen4 preset); print JSON of the figures."""
    from leod_core.data.preprocess import PRESETS, preprocess_dataset

    baseline_kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    began = time.perf_counter()
    preprocess_dataset(Path(raw_dir), Path(out_dir), PRESETS["gen4"], progress=False)
    seconds = time.perf_counter() - began
    print(json.dumps({"seconds": seconds, "baseline_mb": baseline_kb / 1024,
                      "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def preprocess_rows(minutes: list[float], rate_hz: float, workdir: Path) -> list[str]:
    camera = get_camera("gen4")
    rows = []
    for length in minutes:
        raw = workdir / f"raw_{length}min"
        for split in ("train", "val", "test"):
            (raw / split).mkdir(parents=True, exist_ok=True)
        recording = raw / "train" / f"{SEQ}.raw"
        count = write_recording_of(recording, length * 60, rate_hz, (camera.sensor_height, camera.sensor_width))
        write_labels(raw / "train" / f"{SEQ}_bbox.npy", length * 60)
        out = workdir / f"out_{length}min"
        done = subprocess.run([sys.executable, __file__, "worker", str(raw), str(out)], check=True,
                              capture_output=True, text=True)
        figures = json.loads(done.stdout.strip().splitlines()[-1])
        reprs = sum(1 for _ in out.rglob("event_representations_ds2_nearest.h5"))
        num_frames = len(np.load(next(out.rglob("timestamps_us.npy")), allow_pickle=False)) if reprs else 0
        rows.append(f"| preprocess gen4 EVT3, {length:g} min | {provenance(CPU, SCRIPT)} | {load_average()} | "
                    f"{count / 1e6:.0f} | {recording.stat().st_size / 1e9:.2f} | {num_frames} | "
                    f"{figures['seconds']:.0f} | {count / figures['seconds'] / 1e6:.2f} | "
                    f"{figures['baseline_mb']:.0f} | {figures['peak_mb']:.0f} |")
        recording.unlink()
    return rows


def predict_rows(camera_name: str, seconds: float, rate_hz: float, size: str, workdir: Path) -> list[str]:
    """``leod predict``'s library call (:func:`predict_recording`) on a recording of the camera's sensor."""
    from leod_core.data.preprocess import PRESETS
    from leod_core.data.recording_reprs import RecordingRepresentations
    from leod_core.models.detector import RVTConfig, build_detector
    from leod_core.models.inference import InferenceConfig
    from leod_core.models.predict import predict_recording

    camera = get_camera(camera_name)
    recording = workdir / f"{SEQ}.raw"
    count = write_recording_of(recording, seconds, rate_hz, (camera.sensor_height, camera.sensor_width))
    config = getattr(RVTConfig, size)(camera.num_classes, camera.frame_hw,
                                      partition_split_32=camera.partition_split_32)
    model = build_detector(config).eval()
    cfg = InferenceConfig(batch_size=1, sequence_length=camera.sequence_length, confidence_threshold=0.1,
                          downsampled_by_2=camera.downsampled_by_2, start_from_zero=True)
    result = predict_recording(model, config.input_hw, RecordingRepresentations(recording, PRESETS[camera_name]),
                               cfg, progress=False)
    return [f"| predict {camera_name} RVT-{size[0].upper()} fp32, {seconds:g} s | {provenance(CPU, SCRIPT)} | "
            f"{load_average()} | {count / 1e6:.0f} | {result.num_reprs} | {result.seconds:.0f} | "
            f"{result.num_reprs / result.seconds:.2f} | {count / result.seconds / 1e6:.2f} | "
            f"{100 * result.seconds_reading / result.seconds:.0f} |"]


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "worker":
        worker(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    pre = sub.add_parser("preprocess")
    pre.add_argument("--minutes", type=float, nargs="+", default=[2.5, 5.0, 10.0])
    pre.add_argument("--rate", type=float, default=1e6, help="events per second")
    pre.add_argument("--workdir", help="where the recordings go (default: a temporary directory)")
    pred = sub.add_parser("predict")
    pred.add_argument("--camera", default="gen1")
    pred.add_argument("--seconds", type=float, default=60.0)
    pred.add_argument("--rate", type=float, default=5e5, help="events per second")
    pred.add_argument("--size", default="tiny", choices=("tiny", "small", "base"))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=getattr(args, "workdir", None)) as tmp:
        if args.what == "preprocess":
            print_markdown_table(("events (M)", "file (GB)", "representations", "time (s)", "M events/s",
                                  "RSS after imports (MB)", "peak RSS (MB)"),
                                 preprocess_rows(args.minutes, args.rate, Path(tmp)))
        else:
            print_markdown_table(("events (M)", "frames", "time (s)", "frames/s", "M events/s",
                                  "building frames (% of time)"),
                                 predict_rows(args.camera, args.seconds, args.rate, args.size, Path(tmp)))


if __name__ == "__main__":
    main()
