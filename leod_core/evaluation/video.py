"""Prediction videos of one sequence (LEOD's ``vis_pred.py`` equivalent, without the model).

Every event representation of a preprocessed sequence becomes one video frame:

* Event frame -> RGB as RVT's visualisation callback (``callbacks/viz_base.py::ev_repr_to_img``): the 10
  negative-polarity bins (channels 0-9) and the 10 positive ones (10-19) are summed per pixel; pixels with
  more positive than negative counts are white, more negative black, the rest grey (127).
* Ground-truth boxes (``labels_v2/labels.npz``) are drawn in :data:`GT_COLOR` (green) on the labeled
  representations only (``objframe_idx_2_repr_idx``), with the class name under the box. For
  ``downsampled_by_2`` (the ``_ds2_nearest`` frames) they are halved, since the labels are stored in
  full-resolution pixels.
* Predicted boxes (``predictions[repr_idx]``, a structured array with the fields ``x, y, w, h`` (top-left
  corner and size, in the pixels of the frames read), ``class_id`` and ``class_confidence``, e.g.
  ``PROPHESEE_BBOX_DTYPE``) with ``class_confidence >= confidence_threshold`` are drawn in :data:`PRED_COLOR`
  (red) with ``"{class name} {score:.2f}"`` above the box. Predictions are not rescaled.
* The representation's time (``timestamps_us.npy``) and index are written in the top-left corner (blue on
  white), over everything else.

Rectangles and text are drawn with Pillow (bitmap font, no anti-aliasing, so a frame holds a handful of
exact colours). Frames can be enlarged ``scale`` times (nearest neighbour) before drawing, for legibility.

Writers (chosen by :func:`choose_writer`, the choice is logged):

* ``imageio-ffmpeg``: MP4 (H.264, yuv420p) through ``imageio`` + ``imageio-ffmpeg`` (which ships an ffmpeg
  binary) -- preferred;
* ``matplotlib-ffmpeg``: MP4 through matplotlib's ``FFMpegWriter`` when an ``ffmpeg`` binary is found
  (``rcParams['animation.ffmpeg_path']``) but imageio is not installed;
* ``pillow-gif``: animated GIF through Pillow (lossless palette images) when no MP4 writer exists (a warning
  is logged) or when asked for (``format='gif'`` or an ``out_path`` ending in ``.gif``). GIF delays have a
  10 ms resolution, and Pillow merges identical consecutive frames into one longer frame.

MP4 frames are padded (bottom/right, black) to even sizes as H.264 with 4:2:0 chroma needs. The video is
written to a temporary file with the right suffix (the writers infer the container from it) and renamed.
"""
from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Literal, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from leod_core.data.atomic import atomic_path
from leod_core.data.formats import SequencePaths, read_labels, read_timestamps_us
from leod_core.data.sequence import SequenceReader

log = logging.getLogger(__name__)

PathLike = str | os.PathLike
VideoFormat = Literal["auto", "mp4", "gif"]
WRITERS = ("imageio-ffmpeg", "matplotlib-ffmpeg", "pillow-gif")

#: RGB colours: ground truth, predictions, event polarities (RVT's convention), text.
GT_COLOR = (0, 255, 0)
PRED_COLOR = (255, 0, 0)
BACKGROUND_GREY = 127
POSITIVE_VALUE = 255
NEGATIVE_VALUE = 0
TEXT_COLOR = (0, 0, 0)
TIME_COLOR = (0, 0, 255)
CAPTION_BACKGROUND = (255, 255, 255)
PAD_VALUE = 0
READ_CHUNK = 32  # representations read from the HDF5 file at once
_PRED_FIELDS = ("x", "y", "w", "h", "class_id", "class_confidence")


# ------------------------------------------------------------------------------------------ frame images
def ev_repr_to_rgb(ev_repr: np.ndarray) -> np.ndarray:
    """uint8 [H, W, 3] image of one stacked histogram [2*B, H, W] (first B channels negative polarity).

    White where the positive counts exceed the negative ones, black where the negative ones do, grey (127)
    elsewhere -- RVT's ``ev_repr_to_img``.
    """
    if ev_repr.ndim != 3 or ev_repr.shape[0] < 2 or ev_repr.shape[0] % 2:
        raise ValueError(f"expected an event representation [2*B, H, W], got shape {ev_repr.shape}")
    bins = ev_repr.shape[0] // 2
    neg = ev_repr[:bins].sum(axis=0, dtype=np.int32)
    pos = ev_repr[bins:].sum(axis=0, dtype=np.int32)
    diff = pos - neg
    img = np.full((*diff.shape, 3), BACKGROUND_GREY, dtype=np.uint8)
    img[diff > 0] = POSITIVE_VALUE
    img[diff < 0] = NEGATIVE_VALUE
    return img


def _font() -> ImageFont.ImageFont:
    """Pillow's bitmap font (no anti-aliasing, so box and text colours stay exact)."""
    loader = getattr(ImageFont, "load_default_imagefont", None)
    return loader() if loader is not None else ImageFont.load_default()


def _class_name(class_names: Sequence[str], class_id: int) -> str:
    return class_names[class_id] if 0 <= class_id < len(class_names) else str(class_id)


def draw_boxes(img: Image.Image, boxes: np.ndarray, color: tuple[int, int, int], labels: Sequence[str],
               label_above: bool, scale: float = 1.0, line_width: int = 1,
               font: ImageFont.ImageFont | None = None) -> None:
    """Draw boxes (fields ``x, y, w, h``: top-left and size, in frame pixels before ``scale``) on ``img``.

    Each box is an outline from ``(x, y)`` to ``(x + w, y + h)`` (rounded, times ``scale``, clipped to the
    image). Its label is written in ``TEXT_COLOR`` on a ``color`` background just above the box
    (``label_above``) or just below it, moved inside the image where it would leave it.
    """
    font = font or _font()
    draw = ImageDraw.Draw(img)
    width, height = img.size
    for box, text in zip(boxes, labels):
        x0 = int(round(float(box["x"]) * scale))
        y0 = int(round(float(box["y"]) * scale))
        x1 = int(round((float(box["x"]) + float(box["w"])) * scale))
        y1 = int(round((float(box["y"]) + float(box["h"])) * scale))
        x0, x1 = max(0, min(x0, width - 1)), max(0, min(x1, width - 1))
        y0, y1 = max(0, min(y0, height - 1)), max(0, min(y1, height - 1))
        draw.rectangle((x0, y0, x1, y1), outline=color, width=line_width)
        if not text:
            continue
        left, top, right, bottom = draw.textbbox((0, 0), text, font=font)
        tw, th = right - left + 2, bottom - top + 1
        ty = y0 - th if label_above else y1 + 1
        ty = max(0, min(ty, height - th))
        tx = max(0, min(x0, width - tw))
        draw.rectangle((tx, ty, tx + tw - 1, ty + th - 1), fill=color)
        draw.text((tx + 1 - left, ty - top), text, fill=TEXT_COLOR, font=font)


def render_frame(ev_repr: np.ndarray, gt_boxes: np.ndarray | None, pred_boxes: np.ndarray | None,
                 class_names: Sequence[str], gt_scale: float = 1.0, scale: int = 1,
                 caption: str | None = None) -> np.ndarray:
    """uint8 [H*scale, W*scale, 3] frame: event image, GT boxes (times ``gt_scale``), predictions, then the
    caption (blue on white, top-left corner) on top."""
    img = ev_repr_to_rgb(ev_repr)
    if scale != 1:
        img = np.repeat(np.repeat(img, scale, axis=0), scale, axis=1)
    pil = Image.fromarray(img)
    font = _font()
    if gt_boxes is not None and len(gt_boxes):
        names = [_class_name(class_names, int(c)) for c in gt_boxes["class_id"]]
        draw_boxes(pil, gt_boxes, GT_COLOR, names, label_above=False, scale=gt_scale * scale,
                   line_width=scale, font=font)
    if pred_boxes is not None and len(pred_boxes):
        names = [f"{_class_name(class_names, int(c))} {float(s):.2f}"
                 for c, s in zip(pred_boxes["class_id"], pred_boxes["class_confidence"])]
        draw_boxes(pil, pred_boxes, PRED_COLOR, names, label_above=True, scale=scale, line_width=scale,
                   font=font)
    if caption:
        draw = ImageDraw.Draw(pil)
        left, top, right, bottom = draw.textbbox((0, 0), caption, font=font)
        draw.rectangle((0, 0, right - left + 1, bottom - top), fill=CAPTION_BACKGROUND)
        draw.text((1 - left, -top), caption, fill=TIME_COLOR, font=font)
    return np.asarray(pil)


def pad_to_even(frame: np.ndarray, value: int = PAD_VALUE) -> np.ndarray:
    """Pad an [H, W, 3] frame at the bottom/right to even H and W (H.264 4:2:0 needs them)."""
    ph, pw = frame.shape[0] % 2, frame.shape[1] % 2
    if not (ph or pw):
        return frame
    return np.pad(frame, ((0, ph), (0, pw), (0, 0)), constant_values=value)


# ----------------------------------------------------------------------------------------------- writers
def _imageio_ffmpeg_available() -> bool:
    try:
        import imageio  # noqa: F401
        import imageio_ffmpeg
        imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError, OSError):  # not installed, or its ffmpeg binary cannot be found
        return False
    return True


def _matplotlib_ffmpeg_available() -> bool:
    try:
        from matplotlib.animation import FFMpegWriter
        return bool(FFMpegWriter.isAvailable())
    except (ImportError, RuntimeError, OSError):
        return False


def choose_writer(format: VideoFormat = "auto", out_path: PathLike | None = None) -> str:
    """Name of the writer that will be used (one of :data:`WRITERS`); logs the choice.

    ``format='gif'`` (or ``'auto'`` with an ``out_path`` ending in ``.gif``) gives ``pillow-gif``.
    ``'mp4'`` needs ``imageio-ffmpeg`` or matplotlib + an ffmpeg binary, else raises ``RuntimeError``;
    ``'auto'`` falls back from those to ``pillow-gif`` with a warning.
    """
    if format not in ("auto", "mp4", "gif"):
        raise ValueError(f"format must be 'auto', 'mp4' or 'gif', got {format!r}")
    if format == "auto" and out_path is not None and Path(out_path).suffix.lower() == ".gif":
        format = "gif"
    if format == "gif":
        log.info("video writer: pillow-gif (animated GIF, requested)")
        return "pillow-gif"
    if _imageio_ffmpeg_available():
        log.info("video writer: imageio-ffmpeg (MP4, H.264)")
        return "imageio-ffmpeg"
    if _matplotlib_ffmpeg_available():
        log.info("video writer: matplotlib-ffmpeg (MP4, H.264; imageio-ffmpeg is not installed)")
        return "matplotlib-ffmpeg"
    if format == "mp4":
        raise RuntimeError("no MP4 writer: install imageio and imageio-ffmpeg (extra 'video'), or put an ffmpeg "
                           "binary on PATH")
    log.warning("video writer: pillow-gif (animated GIF) -- no MP4 writer found; install imageio and "
                "imageio-ffmpeg (extra 'video') or an ffmpeg binary for MP4")
    return "pillow-gif"


def _write_imageio(path: Path, frames: Iterator[np.ndarray], fps: float) -> int:
    import imageio.v2 as imageio
    count = 0
    writer = imageio.get_writer(path, format="FFMPEG", mode="I", fps=fps, codec="libx264",
                                pixelformat="yuv420p", macro_block_size=1, quality=8, ffmpeg_log_level="error")
    try:
        for frame in frames:
            writer.append_data(pad_to_even(frame))
            count += 1
    finally:
        writer.close()
    return count


def _write_matplotlib(path: Path, frames: Iterator[np.ndarray], fps: float) -> int:
    from matplotlib.animation import FFMpegWriter
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    count = 0
    first = next(frames, None)
    if first is None:
        raise ValueError("no frames to write")
    first = pad_to_even(first)
    height, width = first.shape[:2]
    # One inch per pixel at dpi 1: the figure is exactly width x height pixels and the image fills it.
    fig = Figure(figsize=(width, height), dpi=1)
    FigureCanvasAgg(fig)
    image = fig.figimage(first, xo=0, yo=0, origin="upper", resize=False)
    writer = FFMpegWriter(fps=fps, codec="h264", extra_args=["-pix_fmt", "yuv420p", "-loglevel", "error"])
    with writer.saving(fig, str(path), dpi=1):
        writer.grab_frame()
        count += 1
        for frame in frames:
            image.set_data(pad_to_even(frame))
            writer.grab_frame()
            count += 1
    return count


def _to_palette_image(frame: np.ndarray) -> Image.Image:
    """Exact palette image of an RGB frame with at most 256 colours (Pillow's quantizer otherwise)."""
    flat = frame.reshape(-1, 3)
    colors, inverse = np.unique(flat, axis=0, return_inverse=True)
    if len(colors) > 256:
        return Image.fromarray(frame).quantize(256)
    img = Image.frombytes("P", (frame.shape[1], frame.shape[0]), inverse.astype(np.uint8).tobytes())
    img.putpalette(colors.astype(np.uint8).tobytes())
    return img


def _write_gif(path: Path, frames: Iterator[np.ndarray], fps: float) -> int:
    count = 0

    def images() -> Iterator[Image.Image]:
        nonlocal count
        for frame in frames:
            count += 1
            yield _to_palette_image(frame)

    stream = images()
    first = next(stream, None)
    if first is None:
        raise ValueError("no frames to write")
    duration_ms = max(10, int(round(100.0 / fps)) * 10)  # GIF delays are in 1/100 s
    if abs(duration_ms - 1000.0 / fps) > 1e-6:
        log.info("GIF frame delay %d ms for fps %.3g (GIF delays are multiples of 10 ms)", duration_ms, fps)
    first.save(path, format="GIF", save_all=True, append_images=stream, duration=duration_ms, loop=0,
               optimize=False, disposal=1)
    return count


_WRITE_FUNCS = {"imageio-ffmpeg": _write_imageio, "matplotlib-ffmpeg": _write_matplotlib,
                "pillow-gif": _write_gif}


@contextmanager
def atomic_path_with_suffix(target: Path) -> Iterator[Path]:
    """Like :func:`atomic_path`, but the yielded temporary path ends with ``target``'s suffix."""
    with atomic_path(target) as tmp:
        work = tmp.with_name(tmp.name + target.suffix)
        try:
            yield work
            os.replace(work, tmp)
        finally:
            work.unlink(missing_ok=True)


# -------------------------------------------------------------------------------------------- sequence
def _check_predictions(predictions: dict[int, np.ndarray]) -> None:
    for idx, boxes in predictions.items():
        names = boxes.dtype.names or ()
        missing = [k for k in _PRED_FIELDS if k not in names]
        if missing or boxes.ndim != 1:
            raise ValueError(f"predictions[{idx}] must be a 1-D structured array with fields {_PRED_FIELDS}, "
                             f"got dtype {boxes.dtype} shape {boxes.shape}")


def render_sequence_video(seq_dir: Path, out_path: Path, predictions: dict[int, np.ndarray] | None,
                          class_names: Sequence[str], fps: float = 20.0, downsampled_by_2: bool = False,
                          max_frames: int | None = None, confidence_threshold: float = 0.1, *,
                          format: VideoFormat = "auto", scale: int = 1, show_time: bool = True,
                          progress: bool = False) -> Path:
    """Render one preprocessed sequence with its GT and predicted boxes to a video; returns the path written.

    Args:
        seq_dir: preprocessed sequence directory (``{root}/{split}/{seq}``).
        out_path: wanted output file; its suffix is replaced by ``.mp4`` or ``.gif`` after the writer that
            is actually used (see :func:`choose_writer`).
        predictions: ``repr_idx -> boxes`` (fields ``x, y, w, h, class_id, class_confidence``, frame pixels
            of the representation read); ``None`` draws the ground truth only.
        class_names: names indexed by ``class_id`` (ids outside are written as numbers).
        fps: frames per second of the video (one frame per representation).
        downsampled_by_2: read the ``_ds2_nearest`` representations and halve the GT boxes.
        max_frames: render only the first ``max_frames`` representations.
        confidence_threshold: predictions with a lower ``class_confidence`` are not drawn.
        format: ``'auto'`` (MP4 if a writer exists, else GIF), ``'mp4'`` (error without an MP4 writer) or
            ``'gif'``.
        scale: integer enlargement of the frames (nearest neighbour) before drawing.
        show_time: write the representation's time and index in the top-left corner.
        progress: show a tqdm progress bar.
    """
    seq = SequencePaths(Path(seq_dir))
    reader = SequenceReader(seq.root, downsampled_by_2=downsampled_by_2, load_labels=False)
    labels = read_labels(seq.labels)
    repr_of_label = reader.objframe_idx_2_repr_idx
    if len(repr_of_label) != labels.num_frames:
        raise ValueError(f"{seq.root}: {len(repr_of_label)} labeled representations but "
                         f"{labels.num_frames} labeled frames")
    gt_at = {int(r): labels.frame(i) for i, r in enumerate(repr_of_label)}
    return render_stream_video(reader, read_timestamps_us(seq.repr_timestamps), out_path, predictions, class_names,
                               gt_at=gt_at, gt_scale=0.5 if downsampled_by_2 else 1.0, fps=fps,
                               max_frames=max_frames, confidence_threshold=confidence_threshold, format=format,
                               scale=scale, show_time=show_time, progress=progress)


def render_stream_video(reader, timestamps_us: np.ndarray, out_path: Path,
                        predictions: dict[int, np.ndarray] | None, class_names: Sequence[str], *,
                        gt_at: dict[int, np.ndarray] | None = None, gt_scale: float = 1.0, fps: float = 20.0,
                        max_frames: int | None = None, confidence_threshold: float = 0.1,
                        format: VideoFormat = "auto", scale: int = 1, show_time: bool = True,
                        progress: bool = False) -> Path:
    """Render the representations of ``reader`` (a :class:`SequenceReader`, or anything with its ``root``,
    ``num_reprs``, ``frame_hw`` and forward ``iter_chunks``, e.g. a recording read on the fly) with ground truth
    ``gt_at`` (repr index -> Prophesee boxes, drawn scaled by ``gt_scale``) and ``predictions``; the other
    arguments as :func:`render_sequence_video`. ``timestamps_us`` (int64 [T]) captions the frames."""
    if fps <= 0:
        raise ValueError(f"fps must be positive, got {fps}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    if int(scale) != scale or scale < 1:
        raise ValueError(f"scale must be a positive integer, got {scale}")
    predictions, gt_at = predictions or {}, gt_at or {}
    _check_predictions(predictions)

    writer = choose_writer(format, out_path)
    target = Path(out_path).with_suffix(".gif" if writer == "pillow-gif" else ".mp4")
    num_reprs, (height, width) = reader.num_reprs, reader.frame_hw
    num_frames = num_reprs if max_frames is None else min(num_reprs, max_frames)
    if num_frames == 0:
        raise ValueError(f"{reader.root}: no event representations to render")

    def frames() -> Iterator[np.ndarray]:
        from tqdm import tqdm
        bar = tqdm(total=num_frames, unit="frame", desc=f"video {reader.root.name}", disable=not progress)
        chunks = reader.iter_chunks(0, num_frames, READ_CHUNK)
        try:
            for indices, chunk in chunks:
                for idx, ev_repr in zip(indices.tolist(), chunk):
                    preds = predictions.get(idx)
                    if preds is not None and len(preds):
                        preds = preds[preds["class_confidence"] >= confidence_threshold]
                    caption = None
                    if show_time:
                        t_s = timestamps_us[idx] / 1e6 if idx < len(timestamps_us) else float("nan")
                        caption = f"{t_s:.2f}s #{idx}"
                    yield render_frame(ev_repr, gt_at.get(idx), preds, class_names, gt_scale=gt_scale,
                                       scale=int(scale), caption=caption)
                    bar.update(1)
        finally:
            chunks.close()
            bar.close()

    with atomic_path_with_suffix(target) as tmp:
        written = _WRITE_FUNCS[writer](tmp, frames(), fps)
    log.info("%s: wrote %d frames (%dx%d px, %.3g fps, %d labeled, %d with predictions) with %s",
             target, written, width * scale, height * scale, fps, sum(1 for r in gt_at if r < num_frames),
             sum(1 for r in predictions if 0 <= r < num_frames), writer)
    return target
