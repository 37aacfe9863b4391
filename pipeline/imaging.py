"""Page image cleanup with OpenCV: orientation, deskew, border crop, blank test (arrays in, arrays out)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from pipeline.models import PageGeometry

# Longest side (pixels) of the working copy used to measure skew and orientation.
_MEASURE_SIDE = 2000
# Ink pixels sampled for the projection profile (enough for 0.01 degree resolution).
_MAX_POINTS = 400_000


@dataclass(frozen=True)
class SkewEstimate:
    angle: float  # degrees the content is rotated counter-clockwise; undo with rotate(-angle)
    score: float  # sharpness of the row profile at that angle (higher = clearer text lines)


@dataclass(frozen=True)
class CleanedPage:
    image: np.ndarray  # upright, deskewed, cropped; grey (H, W) or RGB (H, W, 3)
    rotation: int  # degrees (0/90/180/270) the page was turned clockwise to stand upright
    skew_deg: float  # detected skew, counter-clockwise positive, corrected
    orientation_method: str
    blank: bool
    ink_ratio: float
    geometry: PageGeometry | None = None  # the source pixels -> `image` map (clean_page sets it)


# An up/down judge takes an upright-axis grey page and returns (is_upside_down, method) or
# None when it cannot tell. Tesseract OSD and the RapidOCR line classifier provide these.
UpDownJudge = Callable[[np.ndarray], "tuple[bool, str] | None"]


def to_gray(image: np.ndarray) -> np.ndarray:
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_RGBA2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)


def _shrink(gray: np.ndarray, side: int = _MEASURE_SIDE) -> np.ndarray:
    scale = side / max(gray.shape)
    if scale >= 1:
        return gray
    return cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)


def ink_mask(gray: np.ndarray) -> np.ndarray:
    """Binary mask (uint8 0/1) of ink: darker than the paper by a clear margin, speckles removed."""
    smooth = cv2.medianBlur(gray, 3)
    paper = float(np.percentile(smooth, 90))
    _, otsu = cv2.threshold(smooth, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    otsu_level = float(_)
    # On a blank page Otsu splits the noise; insist on a real contrast to the paper.
    level = min(otsu_level, paper - 45)
    mask = (smooth < level).astype(np.uint8)
    return cv2.morphologyEx(mask, cv2.MORPH_OPEN, np.ones((2, 2), np.uint8))


def _ink_points(mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    if len(xs) > _MAX_POINTS:
        pick = np.random.default_rng(0).choice(len(xs), _MAX_POINTS, replace=False)
        xs, ys = xs[pick], ys[pick]
    return np.stack([xs.astype(np.float64), ys.astype(np.float64)])


def _profile_score(points: np.ndarray, angle_deg: float) -> float:
    a = np.deg2rad(angle_deg)
    # Row coordinate after undoing a counter-clockwise rotation by `angle`.
    y = points[1] * np.cos(a) + points[0] * np.sin(a)
    bins = np.bincount((y - y.min()).astype(np.int64))
    return float(np.dot(bins, bins))


def _search(points: np.ndarray, lo: float, hi: float, step: float) -> tuple[float, float]:
    angles = np.arange(lo, hi + step / 2, step)
    scores = [_profile_score(points, float(a)) for a in angles]
    best = int(np.argmax(scores))
    return float(angles[best]), float(scores[best])


def _estimate_from_points(points: np.ndarray, max_angle: float) -> SkewEstimate:
    if points.shape[1] < 50:
        return SkewEstimate(0.0, 0.0)
    angle, _ = _search(points, -max_angle, max_angle, 0.5)
    angle, _ = _search(points, angle - 0.5, angle + 0.5, 0.05)
    angle, score = _search(points, angle - 0.05, angle + 0.05, 0.01)
    return SkewEstimate(round(angle, 2), score / points.shape[1] ** 2)


def estimate_skew(gray: np.ndarray, max_angle: float = 10.0) -> SkewEstimate:
    """Skew of horizontal text lines by projection profile over ink-pixel coordinates."""
    mask = ink_mask(_shrink(gray))
    return _estimate_from_points(_ink_points(mask), max_angle)


def estimate_axis_and_skew(gray: np.ndarray, max_angle: float = 10.0) -> tuple[int, SkewEstimate]:
    """Whether text lines run across (0) or down (90) the image, and the skew on that axis.

    Returns (quarter_turns, skew) where quarter_turns is 0 or 1: the number of clockwise
    quarter turns that make the lines horizontal (up/down is decided separately).
    """
    mask = ink_mask(_shrink(gray))
    points = _ink_points(mask)
    across = _estimate_from_points(points, max_angle)
    # Rotating the image 90 degrees clockwise maps (x, y) to (H - 1 - y, x).
    turned = np.stack([mask.shape[0] - 1 - points[1], points[0]])
    down = _estimate_from_points(turned, max_angle)
    if down.score > across.score * 1.15:
        return 1, down
    return 0, across


def rotate_quarter_turns(image: np.ndarray, turns_cw: int) -> np.ndarray:
    turns_cw %= 4
    if turns_cw == 0:
        return image
    codes = {1: cv2.ROTATE_90_CLOCKWISE, 2: cv2.ROTATE_180, 3: cv2.ROTATE_90_COUNTERCLOCKWISE}
    return cv2.rotate(image, codes[turns_cw])


def _translation(dx: float, dy: float) -> np.ndarray:
    return np.array([[1.0, 0.0, dx], [0.0, 1.0, dy], [0.0, 0.0, 1.0]])


def quarter_turn_matrix(turns_cw: int, width: int, height: int) -> np.ndarray:
    """What rotate_quarter_turns does to a point of a width x height image (continuous pixel
    coordinates, y down): exact, since the turn only moves whole pixels."""
    turns_cw %= 4
    if turns_cw == 1:  # (x, y) -> (H - y, x)
        return np.array([[0.0, -1.0, height], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]])
    if turns_cw == 2:  # (x, y) -> (W - x, H - y)
        return np.array([[-1.0, 0.0, width], [0.0, -1.0, height], [0.0, 0.0, 1.0]])
    if turns_cw == 3:  # (x, y) -> (y, W - x)
        return np.array([[0.0, 1.0, 0.0], [-1.0, 0.0, width], [0.0, 0.0, 1.0]])
    return np.eye(3)


def deskew_matrix(angle: float, width: int, height: int) -> np.ndarray:
    """What deskew does to a point (continuous pixel coordinates, y down). OpenCV's matrix works
    on pixel centres at whole numbers; shifted by half a pixel either side it maps corners."""
    if abs(angle) < 0.005:
        return np.eye(3)
    opencv = np.vstack([cv2.getRotationMatrix2D((width / 2, height / 2), -angle, 1.0), [0.0, 0.0, 1.0]])
    return _translation(0.5, 0.5) @ opencv @ _translation(-0.5, -0.5)


def paper_colour(image: np.ndarray) -> tuple[float, ...]:
    """A bright percentile per channel: the paper tone, used to fill uncovered corners."""
    if image.ndim == 2:
        return (float(np.percentile(image, 90)),)
    return tuple(float(np.percentile(image[..., c], 90)) for c in range(image.shape[2]))


def deskew(image: np.ndarray, angle: float) -> np.ndarray:
    """Undo a counter-clockwise skew of `angle` degrees; uncovered corners take the paper tone."""
    if abs(angle) < 0.005:
        return image
    h, w = image.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), -angle, 1.0)
    fill = paper_colour(image)
    return cv2.warpAffine(
        image,
        matrix,
        (w, h),
        flags=cv2.INTER_CUBIC,
        borderMode=cv2.BORDER_CONSTANT,
        borderValue=fill if len(fill) > 1 else fill[0],
    )


def crop_dark_borders(image: np.ndarray, dark_share: float = 0.5) -> np.ndarray:
    """Cut rows and columns at the edges that are mostly dark (scanner lid or background)."""
    x0, y0, x1, y1 = dark_border_box(image, dark_share)
    if (x0, y0, x1, y1) == (0, 0, image.shape[1], image.shape[0]):
        return image
    return image[y0:y1, x0:x1]


def dark_border_box(image: np.ndarray, dark_share: float = 0.5) -> tuple[int, int, int, int]:
    """The part (x0, y0, x1, y1) of the image crop_dark_borders keeps."""
    gray = to_gray(image)
    small = _shrink(gray, 1000)
    scale = gray.shape[0] / small.shape[0]
    paper = float(np.percentile(small, 90))
    dark = small < paper * 0.55
    rows, cols = dark.mean(axis=1), dark.mean(axis=0)

    def edge(profile: np.ndarray) -> tuple[int, int]:
        n = len(profile)
        lo = 0
        while lo < n // 4 and profile[lo] > dark_share:
            lo += 1
        hi = n
        while hi > n - n // 4 and profile[hi - 1] > dark_share:
            hi -= 1
        # a margin so the border's soft edge goes too
        pad = 3 if (lo or hi < n) else 0
        return min(lo + pad if lo else 0, n), max(hi - pad if hi < n else n, 0)

    top, bottom = edge(rows)
    left, right = edge(cols)
    if (top, bottom, left, right) == (0, len(rows), 0, len(cols)):
        return 0, 0, image.shape[1], image.shape[0]
    y0, y1 = int(top * scale), int(bottom * scale)
    x0, x1 = int(left * scale), int(right * scale)
    # as a slice takes them: never past the image, never negative in size
    y1, x1 = min(y1, image.shape[0]), min(x1, image.shape[1])
    return x0, y0, max(x1, x0), max(y1, y0)


def ink_ratio(gray: np.ndarray, dpi: int) -> float:
    """Share of the page covered by ink marks bigger than scanner speckles.

    A frame of 3% on each side is ignored: scanner edges, shadows and punch holes live there.
    """
    small = _shrink(gray, 1200)
    h, w = small.shape
    fy, fx = int(h * 0.03), int(w * 0.03)
    inner = small[fy : h - fy, fx : w - fx]
    mask = ink_mask(inner)
    count, _, stats, _ = cv2.connectedComponentsWithStats(mask, connectivity=8)
    # a speckle: smaller than about 0.25 mm square at the working resolution
    working_dpi = dpi * h / gray.shape[0]
    min_area = max(3, int((working_dpi * 0.25 / 25.4) ** 2))
    areas = stats[1:, cv2.CC_STAT_AREA]
    return int(areas[areas >= min_area].sum()) / float(inner.size)


def is_blank(gray: np.ndarray, dpi: int, threshold: float) -> tuple[bool, float]:
    ratio = ink_ratio(gray, dpi)
    return ratio < threshold, ratio


def clean_page(
    image: np.ndarray,
    dpi: int,
    *,
    max_skew: float = 10.0,
    detect_orientation: bool = True,
    crop_borders: bool = True,
    blank_threshold: float = 0.0001,
    judges: tuple[UpDownJudge, ...] = (),
) -> CleanedPage:
    """Turn a scanned page upright, deskew it, crop dark borders and test it for blankness.

    The result's `geometry` is the whole cleanup as one affine map from the source's pixels to
    the cleaned page's, so packaging can draw the source itself (a kept JPEG) as the cleaned page.
    In two parts: `begin_cleaning`, everything before the up/down vote (which needs an OCR
    engine), and `finish_cleaning`, the vote and what follows.
    """
    begun = begin_cleaning(
        image,
        dpi,
        max_skew=max_skew,
        detect_orientation=detect_orientation,
        crop_borders=crop_borders,
        blank_threshold=blank_threshold,
    )
    return finish_cleaning(begun, judges)


@dataclass
class BegunPage:
    """A page cleaned up to its up/down vote (`begin_cleaning`); `finish_cleaning` ends it."""

    image: np.ndarray  # on its upright axis, deskewed
    gray: np.ndarray | None  # the same in grey, for the vote (None: no vote asked)
    transform: np.ndarray  # source pixels -> `image`
    turns: int
    skew_deg: float
    fill: tuple[float, ...]
    ink_ratio: float
    source_size: tuple[int, int]
    source_crop: tuple[int, int, int, int]
    crop_borders: bool


def _geometry(
    source_size: tuple[int, int],
    source_crop: tuple[int, int, int, int],
    m: np.ndarray,
    final: np.ndarray,
    fill: tuple[float, ...] = (),
) -> PageGeometry:
    return PageGeometry(
        source_size,
        source_crop,
        (float(m[0, 0]), float(m[0, 1]), float(m[0, 2]), float(m[1, 0]), float(m[1, 1]), float(m[1, 2])),
        (final.shape[1], final.shape[0]),
        fill,
    )


def begin_cleaning(
    image: np.ndarray,
    dpi: int,
    *,
    max_skew: float = 10.0,
    detect_orientation: bool = True,
    crop_borders: bool = True,
    blank_threshold: float = 0.0001,
) -> CleanedPage | BegunPage:
    """Crop the dark borders, test for blankness (a blank page ends here, cleaned), find the
    text's axis and skew, turn and deskew: the part of `clean_page` that needs no OCR engine."""
    source_h, source_w = image.shape[:2]
    source_crop = dark_border_box(image) if crop_borders else (0, 0, source_w, source_h)
    x0, y0, x1, y1 = source_crop
    image = image[y0:y1, x0:x1] if source_crop != (0, 0, source_w, source_h) else image
    transform = _translation(-x0, -y0)
    gray = to_gray(image)
    blank, ratio = is_blank(gray, dpi, blank_threshold)
    if blank:
        geometry = _geometry((source_w, source_h), source_crop, transform, image)
        return CleanedPage(image, 0, 0.0, "blank", True, ratio, geometry)

    turns, skew = (
        estimate_axis_and_skew(gray, max_skew) if detect_orientation else (0, estimate_skew(gray, max_skew))
    )
    transform = quarter_turn_matrix(turns, image.shape[1], image.shape[0]) @ transform
    image = rotate_quarter_turns(image, turns)
    fill: tuple[float, ...] = ()
    if abs(skew.angle) >= 0.005:
        fill = paper_colour(image)
        transform = deskew_matrix(skew.angle, image.shape[1], image.shape[0]) @ transform
    image = deskew(image, skew.angle)
    return BegunPage(
        image,
        to_gray(image) if detect_orientation else None,
        transform,
        turns,
        skew.angle,
        fill,
        ratio,
        (source_w, source_h),
        source_crop,
        crop_borders,
    )


_SPENT = np.empty((0, 0), np.uint8)


def finish_cleaning(begun: CleanedPage | BegunPage, judges: tuple[UpDownJudge, ...]) -> CleanedPage:
    """The up/down vote (when `begin_cleaning` was asked for it), a half turn if the page is
    upside down, and the dark borders the turn and deskew left, cropped. `begun` is spent. A
    page `begin_cleaning` ended (a blank one) is returned as it is."""
    if isinstance(begun, CleanedPage):
        return begun
    image, transform, turns = begun.image, begun.transform, begun.turns
    method = "profile"
    if begun.gray is not None:
        upside_down, method = _judge_up_down(begun.gray, judges)
        if upside_down:
            transform = quarter_turn_matrix(2, image.shape[1], image.shape[0]) @ transform
            image = rotate_quarter_turns(image, 2)
            turns += 2
    if begun.crop_borders:
        x0, y0, x1, y1 = dark_border_box(image)
        if (x0, y0, x1, y1) != (0, 0, image.shape[1], image.shape[0]):
            transform = _translation(-x0, -y0) @ transform
            image = image[y0:y1, x0:x1]
    geometry = _geometry(begun.source_size, begun.source_crop, transform, image, begun.fill)
    begun.image, begun.gray = _SPENT, None  # whoever still holds `begun` holds no pixels
    return CleanedPage(image, (turns % 4) * 90, begun.skew_deg, method, False, begun.ink_ratio, geometry)


def _judge_up_down(gray: np.ndarray, judges: tuple[UpDownJudge, ...]) -> tuple[bool, str]:
    for judge in judges:
        verdict = judge(gray)
        if verdict is not None:
            return verdict
    return False, "none"
