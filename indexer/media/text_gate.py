"""Does a picture hold text? A cheap test (milliseconds) run before OCR (seconds).

Letters are small marks darker (or lighter) than what is around them, of similar height, lined
up side by side. On a greyscale copy at most `GATE_SIDE` pixels long, each pixel is compared with
the mean of its neighbourhood (a box filter), the dark and the light marks are labelled (OpenCV
where installed, else scipy.ndimage), marks of a letter's shape are kept, and marks with a
neighbour of about the same height on about the same line a letter's width away are chained. Chains of at least
`MIN_CHAIN` marks are candidate lines of text; the test passes when one of them holds at least
`LONG_LINE` marks (about eight letters, spaces between words bridged) and they hold at least
`min_marks` marks together. The lines' boxes come back too: OCR reads a sparse picture (a sign on
a photo) by its lines, a dense one (a page, a screenshot) whole.

Why one long line: the photos the test passed by mistake (wood grain, gravel, water, leaves) held
many short chains of three to seven letter-like marks, while every generated receipt, screenshot,
slide and sign held a line of nine or more. Asking for one line of eight skips 97% of photos
against 82% before, with every text picture still passed (docs/BENCHMARKS.md); the price is a
picture whose only words are shorter (a sign saying EXIT), which is not read under `--ocr auto`
(`--ocr on` reads it). A picture without such a line is answered before its short lines are
checked, which is most of the test's time on a textured photo.

What it costs and how often it is right (docs/BENCHMARKS.md, "Words in pictures"): a few ms per
picture; on photos without text it skips most, on generated receipts, screenshots, slides and
signs it passes nearly all. Tests: tests/test_ocr.py.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

GATE_SIDE = 640  # the long side the test looks at
CV_MAX_REDUCTION = 5.0  # the largest reduction to GATE_SIDE done on OpenCV (gate_gray)
MIN_CHAIN = 3  # marks in a row that make a candidate line
MIN_MARKS = 8  # marks in candidate lines that make a picture "has text"
LONG_LINE = 8  # ... with at least one line this long
CONTRAST = 14.0  # grey levels a mark must differ from its neighbourhood's mean


@dataclass(frozen=True)
class TextScreen:
    """What the test saw: marks in candidate lines, and the lines' boxes as fractions of the picture
    (x0, y0, x1, y1), largest first."""

    marks: int
    lines: tuple[tuple[float, float, float, float], ...] = ()
    coverage: float = 0.0  # share of the picture's area inside the lines' boxes
    light: tuple[bool, ...] = ()  # per line: its letters are lighter than the ground (white on a sign)
    line_marks: tuple[int, ...] = ()  # per line: its marks

    @property
    def longest(self) -> int:
        """Marks in the longest line."""
        return max(self.line_marks, default=0)

    def longest_lines(self, count: int) -> tuple[tuple[float, float, float, float], ...]:
        """The `count` lines of most marks (the likeliest words: on a receipt photographed on a
        table, the largest boxes may be the table's grain), in the order of `lines`."""
        chosen = sorted(sorted(range(len(self.lines)), key=lambda index: -self.line_marks[index])[:count])
        return tuple(self.lines[index] for index in chosen)

    def has_text(self, min_marks: int = MIN_MARKS, long_line: int = LONG_LINE) -> bool:
        return self.marks >= min_marks and self.longest >= long_line


NO_TEXT = TextScreen(0)  # one shared answer: an index run keeps one per new picture until its words pass


def gate_size(width: int, height: int, side: int = GATE_SIDE) -> tuple[int, int]:
    scale = min(1.0, side / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


@functools.lru_cache(maxsize=1)
def _cv2():
    """OpenCV (opencv-python-headless, in the `ocr` extra) where installed, else None: its box filter
    and its connected components with their boxes and areas in one pass do the test's two largest
    steps faster than scipy.ndimage (the whole test 2x: docs/BENCHMARKS.md "The text test on OpenCV"),
    with the same marks (tests/test_ocr.py checks both against each other). One thread: the decode
    threads are the parallelism (cv2.setNumThreads is process-wide: it also holds for other OpenCV
    use in a process that embeds mmsearch)."""
    try:
        import cv2
    except ImportError:
        return None
    cv2.setNumThreads(1)
    return cv2


def _local_mean(gray: np.ndarray, radius: int) -> np.ndarray:
    """Mean over a (2r+1)^2 window (borders mirrored: scipy's "reflect" is OpenCV's BORDER_REFLECT)."""
    cv2 = _cv2()
    if cv2 is not None:
        return cv2.blur(gray, (2 * radius + 1, 2 * radius + 1), borderType=cv2.BORDER_REFLECT)
    from scipy import ndimage

    return ndimage.uniform_filter(gray, size=2 * radius + 1, mode="reflect")


def _letter_shaped(out: np.ndarray, areas: np.ndarray, max_height: int) -> np.ndarray:
    widths, heights = out[:, 2] - out[:, 0], out[:, 3] - out[:, 1]
    fill = areas / np.maximum(1, widths * heights)
    keep = ((heights >= 4) & (heights <= max_height) & (widths <= 6 * heights) & (widths * 6 >= heights)
            & (fill >= 0.12) & (fill <= 0.92) & (widths * heights >= 12))
    return out[keep]


def _marks(mask: np.ndarray, max_height: int) -> np.ndarray:
    """Letter-shaped connected marks of `mask` (4-connected): rows of (x0, y0, x1, y1), exclusive ends,
    in the order of their first pixel in raster order."""
    cv2 = _cv2()
    if cv2 is not None:
        pixels = np.ascontiguousarray(mask, dtype=bool).view(np.uint8)  # 0/1 bytes, whatever mask's dtype
        _, _, stats, _ = cv2.connectedComponentsWithStats(pixels, connectivity=4, ltype=cv2.CV_32S)
        x, y, width, height, areas = (stats[1:, column] for column in range(5))
        out = np.stack([x, y, x + width, y + height], axis=1).astype(np.int32)
        sized = (areas >= 12) & (areas <= max_height * max_height * 4)
        return _letter_shaped(out[sized], areas[sized], max_height)
    from scipy import ndimage

    labels, count = ndimage.label(mask)
    if count == 0:
        return np.zeros((0, 4), np.int32)
    areas = np.bincount(labels.ravel(), minlength=count + 1)
    areas[0] = 0
    sized = np.flatnonzero((areas >= 12) & (areas <= max_height * max_height * 4))  # specks and blobs out first
    if len(sized) == 0:
        return np.zeros((0, 4), np.int32)
    # boxes of the sized marks only: a textured photo has tens of thousands of specks, and a
    # Python slice pair for each of them was the test's largest cost
    relabel = np.zeros(count + 1, np.int32)
    relabel[sized] = np.arange(1, len(sized) + 1, dtype=np.int32)
    boxes = ndimage.find_objects(relabel[labels])
    out = np.array([(box[1].start, box[0].start, box[1].stop, box[0].stop) for box in boxes], np.int32)
    return _letter_shaped(out, areas[sized], max_height)


def _chains(marks: np.ndarray) -> list[np.ndarray]:
    """Marks joined to a right-hand neighbour of about the same height on about the same line, a
    letter's width away; each chain of MIN_CHAIN or more, as indexes into `marks` (left to right),
    the chains in the order of their leftmost mark.

    Vectorised: every (mark, candidate neighbour) pair in one array, the pairs that qualify joined
    by scipy's connected components (a textured photo has thousands of marks; a Python loop over
    their pairs was the test's largest cost). tests/test_ocr.py checks it against a plain loop."""
    count = len(marks)
    if count < MIN_CHAIN:
        return []
    order = np.argsort(marks[:, 0], kind="stable")
    marks = marks[order]
    x0, y0, x1, y1 = (marks[:, index].astype(np.float32) for index in range(4))
    heights = y1 - y0
    centres = (y0 + y1) / 2
    # neighbours of mark i start between x1[i] - 0.3h and x1[i] + 1.2h
    low = np.searchsorted(x0, x1 - 0.3 * heights, side="left")
    spans = np.maximum(np.searchsorted(x0, x1 + 1.2 * heights, side="right") - low, 0)
    total = int(spans.sum())
    if total == 0:
        return []
    left = np.repeat(np.arange(count), spans)
    right = np.repeat(low, spans) + (np.arange(total) - np.repeat(np.cumsum(spans) - spans, spans))
    hl, hr = heights[left], heights[right]
    keep = ((left != right) & (hr <= 1.6 * hl) & (hl <= 1.6 * hr)
            & (np.abs(centres[right] - centres[left]) <= 0.35 * np.maximum(hl, hr)))
    if not keep.any():
        return []
    from scipy.sparse import csr_matrix
    from scipy.sparse.csgraph import connected_components

    left, right = left[keep], right[keep]  # `left` ascending: the pairs are already in CSR row order (no COO)
    starts = np.zeros(count + 1, np.int32)
    np.cumsum(np.bincount(left, minlength=count), out=starts[1:])
    pairs = csr_matrix((np.ones(len(left), np.int8), right.astype(np.int32), starts), shape=(count, count))
    _, labels = connected_components(pairs, directed=False)
    sizes = np.bincount(labels)
    by_label = np.argsort(labels, kind="stable")  # members of each component, ascending, side by side
    ends = np.cumsum(sizes)
    groups = [order[by_label[end - size:end]] for size, end in zip(sizes, ends) if size >= MIN_CHAIN]
    return groups


def _line_residual(x: np.ndarray, y: np.ndarray) -> float:
    """Spread of y about its least-squares line over x (a line of text may be turned a few degrees)."""
    if np.ptp(x) == 0:
        return float(np.std(y))
    slope, offset = np.polyfit(x, y.astype(np.float64), 1)
    if abs(slope) > 0.36:  # steeper than 20 degrees: not read as a line
        return float("inf")
    return float(np.std(y - (slope * x + offset)))


def _looks_like_a_line(gray: np.ndarray, mask: np.ndarray, group: np.ndarray) -> bool:
    """Letters stand on one baseline (or hang from one cap line), and the ground between them is
    even: far more even than the step between letter and ground (grass and gravel fail this)."""
    heights = group[:, 3] - group[:, 1]
    size = float(np.median(heights))
    centres = (group[:, 0] + group[:, 2]) / 2.0
    if min(_line_residual(centres, group[:, 3]), _line_residual(centres, group[:, 1])) > 0.12 * size + 0.5:
        return False
    x0, y0, x1, y1 = int(group[:, 0].min()), int(group[:, 1].min()), int(group[:, 2].max()), int(group[:, 3].max())
    pixels, inked = gray[y0:y1, x0:x1], mask[y0:y1, x0:x1]
    ground = pixels[~inked]
    if ground.size < 8 or inked.sum() < 8:
        return False
    step = abs(float(pixels[inked].mean()) - float(np.median(ground)))
    return step >= 2.0 * float(ground.std()) + 4.0


def screen_gray(gray: np.ndarray) -> TextScreen:
    """The test on a greyscale picture (H, W), already at most GATE_SIDE long."""
    height, width = gray.shape
    if min(height, width) < 8:
        return NO_TEXT
    gray = gray.astype(np.float32)
    mean = _local_mean(gray, max(6, max(height, width) // 48))
    max_height = max(8, height // 3)
    candidates = []  # (group, light, mask)
    for light, mask in enumerate((gray < mean - CONTRAST, gray > mean + CONTRAST)):
        marks = _marks(mask, max_height)
        candidates.extend((marks[members], bool(light), mask) for members in _chains(marks))
    candidates.sort(key=lambda candidate: -len(candidate[0]))  # the long lines first: one must pass
    found = []
    for group, light, mask in candidates:
        if not found and len(group) < LONG_LINE:
            return NO_TEXT  # no long line of text: its short chains are not checked
        if _looks_like_a_line(gray, mask, group):
            found.append((group, light))
    if not found:
        return NO_TEXT
    boxes = [(int(group[:, 0].min()), int(group[:, 1].min()), int(group[:, 2].max()), int(group[:, 3].max()), len(group),
              light) for group, light in found]
    boxes.sort(key=lambda box: -(box[2] - box[0]) * (box[3] - box[1]))
    covered = np.zeros((height, width), bool)
    for x0, y0, x1, y1, _, _ in boxes:
        covered[y0:y1, x0:x1] = True
    lines = tuple((x0 / width, y0 / height, x1 / width, y1 / height) for x0, y0, x1, y1, _, _ in boxes)
    return TextScreen(sum(box[4] for box in boxes), lines, float(covered.mean()), tuple(box[5] for box in boxes),
                      tuple(box[4] for box in boxes))


@functools.lru_cache(maxsize=64)
def _lanczos_taps(scale: float) -> np.ndarray:
    """Pillow's LANCZOS antialiasing kernel for a reduction by `scale` (Lanczos-3 stretched by it),
    at whole-pixel offsets, summing to 1."""
    reach = int(np.ceil(3 * scale))
    offsets = np.arange(-reach, reach + 1, dtype=np.float64) / scale
    taps = np.sinc(offsets) * np.sinc(offsets / 3)
    taps[np.abs(offsets) >= 3] = 0.0
    return (taps / taps.sum()).astype(np.float32)


def gate_gray(image) -> np.ndarray:
    """A PIL image of any size and mode as the test's greyscale pixels, at most GATE_SIDE long.

    The test was tuned on Pillow's LANCZOS reduction (BILINEAR lost receipts). With OpenCV the same
    kernel runs as a separable filter at the input's pixels and the result is sampled at the output
    pixels' centres (bicubic): with the greyscale conversion 2.2 ms instead of 5.3 ms a photo, the
    same answer on all but 4 of 300 photos and 1 of 260 text pictures (docs/BENCHMARKS.md "The
    text test's resize on OpenCV"). The filter runs at every input pixel and holds a float copy of
    the picture, so beyond a CV_MAX_REDUCTION reduction (a picture not shrunk at decode: a large PNG,
    TIFF or WebP) Pillow's resize, which computes only the output pixels, is the faster one and runs
    instead (`bench/text_gate_resize.py --reductions`: 3840 px 38 ms against 36, 5120 px 173 against
    63). Without OpenCV, Pillow's."""
    from PIL import Image

    small = image.convert("L") if image.mode != "L" else image
    size = gate_size(*small.size)
    if size == small.size:
        return np.asarray(small)
    cv2 = _cv2()
    scale_x, scale_y = small.width / size[0], small.height / size[1]
    if cv2 is None or max(scale_x, scale_y) > CV_MAX_REDUCTION:
        return np.asarray(small.resize(size, Image.Resampling.LANCZOS))
    smooth = cv2.sepFilter2D(np.asarray(small), cv2.CV_32F, _lanczos_taps(round(scale_x, 3)),
                             _lanczos_taps(round(scale_y, 3)), borderType=cv2.BORDER_REPLICATE)
    sampled = cv2.resize(smooth, size, interpolation=cv2.INTER_CUBIC)
    return np.clip(np.rint(sampled), 0, 255).astype(np.uint8)


def screen_image(image) -> TextScreen:
    """The test on a PIL image of any size and mode."""
    return screen_gray(gate_gray(image))
