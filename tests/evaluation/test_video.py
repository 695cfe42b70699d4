"""Prediction videos: event frames + GT / predicted boxes written as MP4 (imageio / matplotlib) or GIF."""
from __future__ import annotations

import gc
import logging
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageSequence

from leod_core.data import formats
from leod_core.evaluation import video
from leod_core.evaluation.video import GT_COLOR, PRED_COLOR, ev_repr_to_rgb, render_sequence_video

CLASS_NAMES = ("car", "pedestrian")
NUM_REPRS = 12
LABELED = (5, 9)           # representations with ground truth
GT_BOX = (6, 24, 20, 14)   # x, y, w, h (full-resolution pixels); labels must not cover the edges tested
PRED_BOX = (50, 30, 30, 16)
LOW_BOX = (30, 50, 8, 8)   # below the score threshold: never drawn
LOGGER = "leod_core.evaluation.video"


def _boxes(rows, dtype=formats.PROPHESEE_BBOX_DTYPE, t=0):
    """Structured boxes from (x, y, w, h, class_id, score) rows."""
    out = np.zeros(len(rows), dtype=dtype)
    out["t"] = t
    for key, column in zip(("x", "y", "w", "h", "class_id", "class_confidence"), zip(*rows)):
        out[key] = column
    return out


def make_sequence(root: Path, height: int = 64, width: int = 96, downsampled_by_2: bool = False) -> Path:
    """Tiny preprocessed sequence; with ``downsampled_by_2`` the frames are (height/2, width/2) and stored
    in the ``_ds2_nearest`` file while the labels stay in full-resolution pixels."""
    seq = formats.SequencePaths(root / "test" / "seq_0")
    rng = np.random.default_rng(0)
    fh, fw = (height // 2, width // 2) if downsampled_by_2 else (height, width)
    frames = rng.integers(0, 3, size=(NUM_REPRS, 20, fh, fw)).astype(np.uint8)
    frames[rng.random((NUM_REPRS, 20, fh, fw)) < 0.9] = 0  # sparse events
    with formats.EventReprWriter(seq.ev_repr_file(downsampled_by_2), 20, fh, fw) as writer:
        writer.append(frames)
    ts = (np.arange(NUM_REPRS, dtype=np.int64) + 1) * 50_000
    formats.write_npy(seq.repr_timestamps, ts)
    formats.write_npy(seq.objframe_idx_2_repr_idx, np.array(LABELED, dtype=np.int64))
    label_frames = [_boxes([(*GT_BOX, 0, 1.0)], t=int(ts[r])) for r in LABELED]
    formats.write_labels(seq.labels, formats.SequenceLabels.from_frames(label_frames))
    formats.write_npy(seq.label_timestamps, ts[list(LABELED)])
    return seq.root


def predictions(dtype=formats.PROPHESEE_BBOX_DTYPE):
    return {5: _boxes([(*PRED_BOX, 0, 0.87)], dtype), 7: _boxes([(*PRED_BOX, 1, 0.5), (*LOW_BOX, 0, 0.05)], dtype)}


def read_gif(path: Path) -> list[np.ndarray]:
    with Image.open(path) as im:
        return [np.asarray(frame.convert("RGB")) for frame in ImageSequence.Iterator(im)]


def read_mp4(path: Path) -> list[np.ndarray]:
    imageio = pytest.importorskip("imageio.v2")
    # imageio-ffmpeg's reader leaves the pipes of an ffmpeg that already exited to the garbage collector
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        with imageio.get_reader(path, format="FFMPEG") as reader:
            frames = [np.asarray(frame) for frame in reader]
        del reader
        gc.collect()
    return frames


def is_event_colour(pixel) -> bool:
    return len(set(pixel.tolist())) == 1 and pixel[0] in (0, 127, 255)


def left_edge(box, s=1.0):   # a pixel in the middle of the box's left edge
    x, y, w, h = box
    return int(round(y * s + h * s / 2)), int(round(x * s))


def right_edge(box, s=1.0):
    x, y, w, h = box
    return int(round(y * s + h * s / 2)), int(round((x + w) * s))


@pytest.fixture
def seq_dir(tmp_path) -> Path:
    return make_sequence(tmp_path / "data")


def test_ev_repr_to_rgb_follows_rvt_convention():
    ev = np.zeros((20, 2, 3), dtype=np.uint8)
    ev[0, 0, 0] = 2                     # negative only -> black
    ev[12, 0, 1] = 1                    # positive only -> white
    ev[3, 0, 2], ev[15, 0, 2] = 1, 1    # balanced -> grey
    ev[1, 1, 0], ev[11, 1, 0], ev[19, 1, 0] = 1, 1, 1  # positive majority -> white
    img = ev_repr_to_rgb(ev)
    assert img.shape == (2, 3, 3) and img.dtype == np.uint8
    np.testing.assert_array_equal(img[..., 0], [[0, 255, 127], [255, 127, 127]])
    assert np.all(img == img[..., :1])  # grey levels only
    with pytest.raises(ValueError):
        ev_repr_to_rgb(np.zeros((3, 2, 2), dtype=np.uint8))


def test_gif_frames_boxes_and_colours(seq_dir, tmp_path, caplog):
    caplog.set_level(logging.INFO, logger=LOGGER)
    out = render_sequence_video(seq_dir, tmp_path / "vis" / "seq_0.mp4", predictions(), CLASS_NAMES, fps=20,
                                format="gif")
    assert out == tmp_path / "vis" / "seq_0.gif" and out.is_file()
    assert "video writer: pillow-gif" in caplog.text
    assert sorted(p.name for p in out.parent.iterdir()) == ["seq_0.gif"]  # no temporary file left
    with Image.open(out) as im:
        assert im.format == "GIF" and im.info["duration"] == 50
    frames = read_gif(out)
    assert len(frames) == NUM_REPRS
    assert all(f.shape == (64, 96, 3) for f in frames)

    gt_left, pred_right, low_left = left_edge(GT_BOX), right_edge(PRED_BOX), left_edge(LOW_BOX)
    # GT on the labeled representations only
    for r in range(NUM_REPRS):
        pixel = frames[r][gt_left]
        if r in LABELED:
            assert tuple(pixel) == GT_COLOR, r
        else:
            assert is_event_colour(pixel), r
    # predictions on representations 5 and 7 (the low-score box is filtered)
    for r in range(NUM_REPRS):
        pixel = frames[r][pred_right]
        assert (tuple(pixel) == PRED_COLOR) == (r in (5, 7)), r
    assert is_event_colour(frames[7][low_left])
    # the whole box outline has the colour (top and bottom edges too)
    x, y, w, h = GT_BOX
    assert all(tuple(frames[5][y, c]) == GT_COLOR for c in range(x, x + w + 1))
    x, y, w, h = PRED_BOX
    assert all(tuple(frames[5][y + h, c]) == PRED_COLOR for c in range(x, x + w + 1))
    # the frame is otherwise made of event colours, box colours and label text
    colours = {tuple(p) for p in frames[5].reshape(-1, 3)}
    assert colours <= {(0, 0, 0), (127, 127, 127), (255, 255, 255), GT_COLOR, PRED_COLOR, video.TIME_COLOR}


def test_gif_without_predictions_and_max_frames(seq_dir, tmp_path):
    out = render_sequence_video(seq_dir, tmp_path / "seq.gif", None, CLASS_NAMES, fps=10, max_frames=7,
                                show_time=False)
    assert out.suffix == ".gif"  # 'auto' with a .gif target
    frames = read_gif(out)
    assert len(frames) == 7
    assert tuple(frames[5][left_edge(GT_BOX)]) == GT_COLOR
    assert not any(np.all(f == PRED_COLOR, axis=-1).any() for f in frames)
    with Image.open(out) as im:
        assert im.info["duration"] == 100


def test_gif_downsampled_by_2_halves_gt_not_predictions(tmp_path):
    seq_dir = make_sequence(tmp_path / "data", downsampled_by_2=True)
    half_pred = {5: _boxes([(25, 15, 15, 8, 0, 0.9)])}  # predictions are in the frame's (half) pixels
    out = render_sequence_video(seq_dir, tmp_path / "ds2.mp4", half_pred, CLASS_NAMES, downsampled_by_2=True,
                                format="gif", scale=2)
    frames = read_gif(out)
    assert len(frames) == NUM_REPRS and frames[0].shape == (64, 96, 3)  # (32, 48) frames enlarged twice
    assert tuple(frames[5][left_edge(GT_BOX, 0.5 * 2)]) == GT_COLOR
    assert tuple(frames[5][right_edge((25, 15, 15, 8), 2)]) == PRED_COLOR
    with pytest.raises(formats.FormatError):  # no full-resolution file in this sequence
        render_sequence_video(seq_dir, tmp_path / "x.gif", None, CLASS_NAMES, format="gif")


def test_pseudo_dtype_predictions_are_accepted(seq_dir, tmp_path):
    out = render_sequence_video(seq_dir, tmp_path / "p.gif", predictions(formats.PSEUDO_BBOX_DTYPE), CLASS_NAMES)
    assert tuple(read_gif(out)[5][right_edge(PRED_BOX)]) == PRED_COLOR
    with pytest.raises(ValueError, match="fields"):
        render_sequence_video(seq_dir, tmp_path / "q.gif", {0: np.zeros((2, 4), np.float32)}, CLASS_NAMES)
    assert not (tmp_path / "q.gif").exists()


def test_failure_leaves_no_file(seq_dir, tmp_path, monkeypatch):
    calls = {"n": 0}
    real = video.render_frame

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:
            raise RuntimeError("boom")
        return real(*args, **kwargs)

    monkeypatch.setattr(video, "render_frame", failing)
    out_dir = tmp_path / "vis"
    out_dir.mkdir()
    with pytest.raises(RuntimeError, match="boom"):
        render_sequence_video(seq_dir, out_dir / "seq.gif", predictions(), CLASS_NAMES, format="gif")
    assert list(out_dir.iterdir()) == []


def test_auto_falls_back_to_gif_with_warning(seq_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(video, "_imageio_ffmpeg_available", lambda: False)
    monkeypatch.setattr(video, "_matplotlib_ffmpeg_available", lambda: False)
    caplog.set_level(logging.INFO, logger=LOGGER)
    out = render_sequence_video(seq_dir, tmp_path / "seq.mp4", predictions(), CLASS_NAMES, max_frames=3)
    assert out == tmp_path / "seq.gif" and len(read_gif(out)) == 3
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("pillow-gif" in r.getMessage() and "no MP4 writer" in r.getMessage() for r in warnings)
    with pytest.raises(RuntimeError, match="no MP4 writer"):
        render_sequence_video(seq_dir, tmp_path / "seq2.mp4", None, CLASS_NAMES, format="mp4")
    assert not (tmp_path / "seq2.mp4").exists()
    with pytest.raises(ValueError, match="format"):
        video.choose_writer("avi")


def _check_mp4(out: Path, num_frames: int, shape: tuple[int, int], scale: int) -> None:
    frames = read_mp4(out)
    assert len(frames) == num_frames
    assert all(f.shape == (*shape, 3) for f in frames)
    # lossy, but thick lines keep their colour near the line's middle
    x, y, w, h = GT_BOX
    gt = frames[5][int((y + h / 2) * scale), x * scale + scale // 2].astype(int)  # lines grow inwards
    x, y, w, h = PRED_BOX
    pred = frames[5][int((y + h / 2) * scale), (x + w) * scale - scale // 2].astype(int)
    assert np.abs(gt - GT_COLOR).max() < 80, gt
    assert np.abs(pred - PRED_COLOR).max() < 80, pred


def test_mp4_imageio(tmp_path, caplog):
    pytest.importorskip("imageio")
    pytest.importorskip("imageio_ffmpeg")
    seq_dir = make_sequence(tmp_path / "data", height=65, width=97)  # 195 x 291: padded to even for H.264
    caplog.set_level(logging.INFO, logger=LOGGER)
    out = render_sequence_video(seq_dir, tmp_path / "vis" / "seq_0.mp4", predictions(), CLASS_NAMES, fps=20,
                                scale=3)
    assert out == tmp_path / "vis" / "seq_0.mp4"
    assert "video writer: imageio-ffmpeg" in caplog.text
    assert sorted(p.name for p in out.parent.iterdir()) == ["seq_0.mp4"]
    _check_mp4(out, NUM_REPRS, (65 * 3 + 1, 97 * 3 + 1), scale=3)
    import imageio_ffmpeg
    assert imageio_ffmpeg.count_frames_and_secs(str(out)) == (NUM_REPRS, pytest.approx(NUM_REPRS / 20))


def test_mp4_matplotlib_fallback(tmp_path, monkeypatch, caplog):
    imageio_ffmpeg = pytest.importorskip("imageio_ffmpeg")
    pytest.importorskip("imageio")  # to read the video back
    import matplotlib
    monkeypatch.setattr(video, "_imageio_ffmpeg_available", lambda: False)
    monkeypatch.setitem(matplotlib.rcParams, "animation.ffmpeg_path", imageio_ffmpeg.get_ffmpeg_exe())
    seq_dir = make_sequence(tmp_path / "data", height=67, width=96)
    caplog.set_level(logging.INFO, logger=LOGGER)
    out = render_sequence_video(seq_dir, tmp_path / "seq.mp4", predictions(), CLASS_NAMES, fps=10, scale=3,
                                max_frames=8)
    assert "video writer: matplotlib-ffmpeg" in caplog.text
    assert out == tmp_path / "seq.mp4" and sorted(p.name for p in tmp_path.iterdir()) == ["data", "seq.mp4"]
    _check_mp4(out, 8, (67 * 3 + 1, 96 * 3), scale=3)
