"""Decoding throughput of Prophesee recordings (DAT, EVT 2.0, EVT 3.0): our readers against independent decoders
(``expelliarmus`` for DAT / EVT 2.0, the ``evt3`` package for EVT 3.0) in the same run and on the same files, and
the peak memory of our chunked reading as a recording's length doubles (it must stay flat).

Usage: python benchmarks/bench_recordings.py [--events 4000000] [--rate 2e6] [--repeats 3] [--chunk 100000]
Events are uniform over a 1280x720 sensor at ``--rate`` events/s (a 1 Mpx camera in traffic); every decoder's
output is checked to equal the written events before timing counts. Prints Markdown tables for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import tempfile
import tracemalloc
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from bench_common import interleaved_medians, load_average, provenance
from leod_core.data.formats import RawEvents
from leod_core.data.recordings import open_recording, write_recording

SENSOR_HW = (720, 1280)
FILE_NAMES = {"dat": "rec_td.dat", "evt2": "rec_td.raw", "evt3": "rec_td.raw"}
CPU = torch.device("cpu")


def random_events(count: int, rate_hz: float, seed: int = 0) -> RawEvents:
    """``count`` events uniform over :data:`SENSOR_HW`, timestamps (µs) sorted at ``rate_hz`` events/s."""
    rng = np.random.default_rng(seed)
    height, width = SENSOR_HW
    t = np.sort(rng.integers(0, int(count / rate_hz * 1e6), count)).astype(np.int64)
    return RawEvents(x=rng.integers(0, width, count).astype(np.uint16), y=rng.integers(0, height, count).astype(
        np.uint16), p=rng.integers(0, 2, count).astype(np.int8), t=t, height=height, width=width)


def independent_decoder(fmt: str) -> Callable[[Path], dict[str, np.ndarray]] | None:
    """x, y, p, t of a file by a decoder that is not ours, or ``None`` where none is installed."""
    try:
        if fmt == "evt3":
            import evt3

            def decode(path: Path) -> dict[str, np.ndarray]:
                out = evt3.decode_file(str(path))
                return {"x": out.x, "y": out.y, "p": out.polarity, "t": out.timestamp}
            return decode
        from expelliarmus import Wizard
    except ImportError:
        return None

    def decode_expelliarmus(path: Path) -> dict[str, np.ndarray]:
        out = Wizard(encoding=fmt, fpath=str(path)).read()
        return {k: out[k] for k in "xypt"}
    return decode_expelliarmus


def ours_chunked(path: Path, chunk: int) -> int:
    """Stream every event of ``path`` in chunks of ``chunk``; returns the event count."""
    return sum(len(part.t) for part in open_recording(path).chunks(chunk))


def check_equal(decoded: dict[str, np.ndarray], events: RawEvents, who: str) -> None:
    for key in "xypt":
        if not np.array_equal(np.asarray(decoded[key]).astype(np.int64), getattr(events, key).astype(np.int64)):
            raise SystemExit(f"{who}: decoded {key} differs from the written events")


def throughput_rows(events: RawEvents, workdir: Path, repeats: int, chunk: int) -> list[str]:
    rows, count = [], len(events.t)
    for fmt, name in FILE_NAMES.items():
        path = workdir / fmt / name
        path.parent.mkdir()
        write_recording(path, events, fmt)
        whole = open_recording(path).read_all()
        check_equal({k: getattr(whole, k) for k in "xypt"}, events, f"ours ({fmt})")
        fns = [lambda: open_recording(path).read_all(), lambda: ours_chunked(path, chunk)]
        theirs = independent_decoder(fmt)
        if theirs is not None:
            check_equal(theirs(path), events, f"independent ({fmt})")
            fns.append(lambda: theirs(path))
        medians, _ = interleaved_medians(fns, repeats, CPU)
        rate = [f"{count / s / 1e6:.1f}" for s in medians] + (["n/a"] if theirs is None else [])
        ratio = f"{medians[2] / medians[0]:.2f}x" if theirs is not None else "n/a"
        rows.append(f"| decode {fmt}, {count} events | {provenance(CPU, 'bench_recordings.py')} | {load_average()} "
                    f"| {path.stat().st_size / 1e6:.0f} | {rate[0]} | {rate[1]} | {rate[2]} | {ratio} |")
    return rows


def peak_memory_rows(events: RawEvents, workdir: Path, chunk: int) -> list[str]:
    """tracemalloc peak (MB) of streaming an EVT3 recording of ``events``, then of one twice as long."""
    doubled = RawEvents(*(np.concatenate([getattr(events, k)] * 2) for k in "xyp"),
                        t=np.concatenate([events.t, events.t + events.t[-1] + 1]), height=events.height,
                        width=events.width)
    rows = []
    for label, evs in (("1x", events), ("2x", doubled)):
        path = workdir / f"peak_{label}.raw"
        write_recording(path, evs, "evt3")
        tracemalloc.start()
        try:
            ours_chunked(path, chunk)
            _, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        rows.append(f"| stream evt3 ({label}), {len(evs.t)} events | {provenance(CPU, 'bench_recordings.py')} | "
                    f"{load_average()} | {path.stat().st_size / 1e6:.0f} | {chunk} | {peak / 1e6:.1f} |")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4_000_000)
    parser.add_argument("--rate", type=float, default=2e6, help="events per second of the synthetic recording")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--chunk", type=int, default=100_000, help="events per chunk of the streaming reads")
    args = parser.parse_args()
    events = random_events(args.events, args.rate)
    with tempfile.TemporaryDirectory() as tmp:
        workdir = Path(tmp)
        print("| benchmark | device | torch | commit | command | load | file (MB) | ours read_all (M ev/s) "
              "| ours chunks (M ev/s) | independent (M ev/s) | ours / independent |")
        print("|" + "---|" * 11)
        print("\n".join(throughput_rows(events, workdir, args.repeats, args.chunk)))
        print()
        print("| benchmark | device | torch | commit | command | load | file (MB) | chunk (events) | peak (MB) |")
        print("|" + "---|" * 9)
        print("\n".join(peak_memory_rows(events, workdir, args.chunk)))


if __name__ == "__main__":
    main()
