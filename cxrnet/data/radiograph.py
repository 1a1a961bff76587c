"""Drawing one synthetic radiograph: anatomy, exposure, and the opacity a pneumonia adds.

Work in "attenuation" (0 air .. ~0.8 bone over tissue); exposure maps it to pixels. The pixels of
a film depend only on the generator seed, its split and index, and its patient's anatomy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import cv2
import numpy as np

from cxrnet.data.records import SPLIT_NAMES

if TYPE_CHECKING:
    from cxrnet.data.synthetic_spec import Film, SyntheticSpec

# The kinds of film, in the order that seeds their anatomy.
KINDS = ("normal", "bacteria", "virus")

# Rendering happens at most this size (long side) and is then resized: the model sees 150 px,
# and drawing at full size would make generation several times slower for no visible gain.
_RENDER_MAX_SIDE = 176


Array = np.ndarray
Shape = tuple[int, int]


def _sig(z: Array) -> Array:
    return 0.5 + 0.5 * np.tanh(0.5 * z)


def _smooth_noise(rng: np.random.Generator, shape: Shape, cells: int) -> Array:
    """Zero-mean, roughly unit-variance noise with ``cells`` blobs across the short side."""
    h, w = shape
    ch = max(2, round(cells * h / min(h, w)))
    cw = max(2, round(cells * w / min(h, w)))
    coarse = rng.standard_normal((ch, cw)).astype(np.float32)
    return cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC) * 1.3


def _ridges(rng: np.random.Generator, shape: Shape, cells: int, sharpness: float = 6.0) -> Array:
    """Branching line network in [0, 1] (ridged noise): vessels, interstitial lines."""
    return (1.0 - np.minimum(np.abs(_smooth_noise(rng, shape, cells)), 1.0)) ** sharpness


def _segment(x: Array, y: Array, p0: tuple[float, float], p1: tuple[float, float]) -> Array:
    """Distance of each point to the segment p0-p1."""
    dx, dy = p1[0] - p0[0], p1[1] - p0[1]
    t = np.clip(((x - p0[0]) * dx + (y - p0[1]) * dy) / (dx * dx + dy * dy), 0.0, 1.0)
    return np.hypot(x - p0[0] - t * dx, y - p0[1] - t * dy)


@dataclass(frozen=True)
class Anatomy:
    """What stays the same across one patient's films."""

    chest: float  # half-width of the chest
    neck: float
    lung_x: float  # lung centre distance from the midline
    lung_rx: float
    lung_ry: float
    heart_x: float
    heart_rx: float
    heart_ry: float
    rib_spacing: float
    vessels: float  # strength of lung markings
    thymus: float  # 0 when absent
    soft_tissue: float  # lateral soft-tissue overlap, 0 when absent
    # The patient's opacity (pneumonia only): side, centre, radius, fissure edge.
    side: int
    lobar: bool  # a whole lobe rather than a round focus
    lower: int  # +1: the lobe below the fissure is affected, -1: the one above
    opacity_x: float
    opacity_y: float  # fissure height for a lobe, centre for a round focus
    opacity_r: float
    fissure: bool


def draw_anatomy(rng: np.random.Generator, distractor_rate: float) -> Anatomy:
    u = rng.uniform
    lobar, lower = u() < 0.6, u() < 0.65
    return Anatomy(
        chest=u(0.80, 0.95),
        neck=u(0.24, 0.32),
        lung_x=u(0.42, 0.46),
        lung_rx=u(0.29, 0.34),
        lung_ry=u(0.72, 0.8),
        heart_x=u(0.1, 0.16),
        heart_rx=u(0.28, 0.34),
        heart_ry=u(0.27, 0.33),
        rib_spacing=u(0.13, 0.16),
        vessels=u(0.5, 1.0) * (2.0 if u() < distractor_rate * 0.5 else 1.0),
        thymus=u(0.5, 1.0) if u() < distractor_rate else 0.0,
        soft_tissue=u(0.4, 1.0) if u() < distractor_rate else 0.0,
        side=-1 if u() < 0.6 else 1,  # image left is the patient's right lung, more often hit
        lobar=bool(lobar),
        lower=1 if lower else -1,
        opacity_x=u(-0.09, 0.09),
        opacity_y=(u(-0.2, 0.15) if lower else u(-0.35, -0.1)) if lobar else u(-0.35, 0.35),
        opacity_r=u(0.2, 0.3),
        fissure=bool(u() < 0.5),
    )


def _film_size(rng: np.random.Generator, spec: SyntheticSpec) -> Shape:
    height = int(rng.integers(spec.min_size, spec.max_size + 1))
    aspect = float(np.exp(rng.uniform(np.log(0.75), np.log(1.35))))
    width = int(np.clip(round(height * aspect), spec.min_size, spec.max_size))
    return height, width


def _grid(rng: np.random.Generator, shape: Shape) -> tuple[Array, Array]:
    """Body coordinates: origin mid-chest, unit about half the short side, slight tilt/shift."""
    h, w = shape
    scale = 0.5 * min(h, w) * rng.uniform(0.85, 1.05)
    cx = 0.5 * w + rng.uniform(-0.05, 0.05) * w
    cy = 0.5 * h + rng.uniform(0.0, 0.1) * h
    angle = np.deg2rad(rng.uniform(-4, 4))
    cols = (np.arange(w, dtype=np.float32) - cx) / scale
    rows = (np.arange(h, dtype=np.float32) - cy) / scale
    x0, y0 = cols[None, :], rows[:, None]
    c, s = np.float32(np.cos(angle)), np.float32(np.sin(angle))
    return c * x0 + s * y0, c * y0 - s * x0


def _draw_lungs(x: Array, y: Array, a: Anatomy, inspiration: float) -> tuple[Array, Array]:
    """Soft masks of the image-left and image-right lung (the patient's right and left)."""
    masks = []
    yc = -0.15
    ry = a.lung_ry * inspiration
    for side in (-1, 1):
        xc = side * a.lung_x
        # Narrow apex, broad base; a squarish superellipse reads as a lung, an ellipse as an egg.
        rx = a.lung_rx * inspiration * (0.92 + 0.3 * (y - yc) / ry)
        r = np.abs((x - xc) / rx) ** 2.6 + np.abs((y - yc) / ry) ** 2.2
        # Diaphragm dome: highest mid-lung, the patient's right side a little higher.
        dome = yc + ry * 0.6 + 0.04 * side + 0.25 * ((x - xc) / 0.4) ** 2
        masks.append(_sig((1.0 - r) / 0.12) * _sig((dome - y) / 0.015))
    return masks[0], masks[1]


def _body(x: Array, y: Array, a: Anatomy) -> tuple[Array, Array]:
    """Soft tissue (thicker mid-body) and the body's soft mask: neck, sloping shoulders, chest."""
    shoulders = _sig((y + 0.92) / 0.1)
    half = a.neck + (a.chest + 0.08 - a.neck) * shoulders - 0.08 * _sig((y + 0.6) / 0.15)
    inside = _sig((half - np.abs(x)) / 0.025)
    thickness = np.sqrt(np.clip(1.0 - (x / half) ** 2, 0.0, 1.0))
    return inside * (0.26 + 0.26 * thickness), inside


def _ribs(rng: np.random.Generator, x: Array, y: Array, a: Anatomy, inside: Array) -> Array:
    ax = np.abs(x)
    offset = rng.uniform(0, 1)
    # Posterior ribs rise slightly from the spine, then sweep down laterally.
    phase = (y + 0.2 * ax - 0.6 * ax**2) / (a.rib_spacing * (1.0 + 0.25 * y)) + offset
    posterior = np.clip((np.cos(2 * np.pi * phase) - 0.35) / 0.65, 0.0, 1.0) ** 0.7
    anterior_phase = (y - 0.45 * ax) / (a.rib_spacing * 1.3) + offset
    anterior = np.clip((np.cos(2 * np.pi * anterior_phase) - 0.5) / 0.5, 0.0, 1.0)
    cage = inside * _sig((y + 0.85) / 0.03) * _sig((0.55 - y) / 0.05) * _sig((ax - 0.07) / 0.02)
    return cage * (0.045 * posterior + 0.02 * anterior * _sig((ax - 0.15) / 0.05))


def _clavicles(x: Array, y: Array) -> Array:
    out = np.zeros_like(x)
    for side in (-1, 1):
        d = _segment(x, y, (side * 0.08, -0.8), (side * 0.6, -0.93))
        out += np.exp(-((d / 0.03) ** 2))
    return 0.12 * out


def _consolidation(rng: np.random.Generator, x: Array, y: Array, a: Anatomy, lung: Array) -> Array:
    """Bacterial opacity in one lung: a whole lobe up to a fissure, or a round pneumonia."""
    shape = x.shape
    patches = np.clip(0.85 + 0.3 * _smooth_noise(rng, shape, 16), 0.0, 1.0)
    edge_noise = 0.06 * _smooth_noise(rng, shape, 6)
    level = a.opacity_y + rng.uniform(-0.04, 0.04)
    if a.lobar:
        # A fissure gives a sharp border; without one the edge fades into aerated lung.
        edge = 0.012 if a.fissure else 0.08
        region = _sig(a.lower * (y - level + edge_noise) / edge)
    else:
        cx = a.side * (a.lung_x + a.opacity_x) + rng.uniform(-0.03, 0.03)
        r = a.opacity_r * rng.uniform(0.85, 1.15)
        d = np.hypot((x - cx) / r, (y - level) / (r * 1.2))
        region = _sig((1.0 - d + 5.0 * edge_noise) / 0.2)
    bronchograms = _ridges(rng, shape, 14)
    return region * patches * lung * (1.0 - 0.25 * bronchograms)


def _interstitial(rng: np.random.Generator, x: Array, y: Array, lungs: Array) -> Array:
    """Diffuse bilateral perihilar haze with reticular lines."""
    shape = x.shape
    perihilar = np.exp(-((np.abs(x) - 0.22) ** 2) / 0.1 - ((y - 0.05) ** 2) / 0.3)
    haze = np.clip(0.7 + 0.3 * _smooth_noise(rng, shape, 4), 0.0, 1.5)
    lines = _ridges(rng, shape, 28, sharpness=3.0)
    nodules = np.maximum(_smooth_noise(rng, shape, 40), 0.0)
    return lungs * (0.5 + 0.5 * perihilar) * (0.8 * haze + 0.4 * lines + 0.25 * nodules)


def _overlays(rng: np.random.Generator, image: Array, leads: bool) -> None:
    """ECG leads and the side marker, burnt in as bright overlays (in place)."""
    h, w = image.shape
    overlay = np.zeros((h, w), dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4)) if leads else 0):
        points = np.stack([rng.uniform(0, w, 4), rng.uniform(0, h, 4)], axis=1)
        t = np.linspace(0, 1, 24)[:, None]
        # A cubic Bezier through random control points: a loosely hanging wire.
        curve = (
            (1 - t) ** 3 * points[0]
            + 3 * (1 - t) ** 2 * t * points[1]
            + 3 * (1 - t) * t**2 * points[2]
            + t**3 * points[3]
        )
        cv2.polylines(overlay, [curve.astype(np.int32)], False, 255, 1, cv2.LINE_AA)
        end = tuple(int(v) for v in curve[-1])
        cv2.circle(overlay, end, max(2, min(h, w) // 40), 255, -1, cv2.LINE_AA)
    if rng.uniform() < 0.6:
        corner = (int(rng.uniform(0.03, 0.12) * w), int(rng.uniform(0.08, 0.2) * h))
        cv2.putText(overlay, "R", corner, cv2.FONT_HERSHEY_SIMPLEX, min(h, w) / 300, 255, 1)
    image += overlay.astype(np.float32) * (rng.uniform(0.25, 0.5) / 255)


def render_film(film: Film, spec: SyntheticSpec) -> Array:
    """The uint8 grayscale pixels of one film."""
    anatomy_rng = np.random.default_rng([spec.seed, 2, KINDS.index(film.kind), film.patient])
    rng = np.random.default_rng([spec.seed, 3, SPLIT_NAMES.index(film.split), film.index])
    a = draw_anatomy(anatomy_rng, spec.distractor_rate)
    height, width = _film_size(rng, spec)
    factor = min(1.0, _RENDER_MAX_SIDE / max(height, width))
    shape = (max(8, round(height * factor)), max(8, round(width * factor)))
    x, y = _grid(rng, shape)

    tissue, inside = _body(x, y, a)
    heart_r2 = ((x - a.heart_x) / a.heart_rx) ** 2 + ((y - 0.27) / a.heart_ry) ** 2
    heart = _sig((1.0 - heart_r2) / 0.2) * inside
    left, right = _draw_lungs(x, y, a, inspiration=rng.uniform(0.92, 1.04))
    # The heart displaces lung rather than lying on top of it.
    left, right = left * (1.0 - 0.95 * heart), right * (1.0 - 0.95 * heart)
    lungs = left + right
    depth = rng.uniform(0.27, 0.34)
    atten = tissue - depth * lungs + 0.04 * heart
    hila = sum(np.exp(-((x - s * 0.17) ** 2) / 0.005 - ((y + 0.02) ** 2) / 0.02) for s in (-1, 1))
    vessels = _ridges(rng, shape, 18) * np.exp(-np.hypot(np.abs(x) - 0.17, y) / 0.35)
    atten += lungs * (0.07 * hila + 0.06 * a.vessels * vessels)
    mediastinum = _sig((0.1 - np.abs(x - 0.01)) / 0.02) * inside
    spine = _sig((0.06 - np.abs(x)) / 0.01) * (0.6 + 0.4 * np.cos(2 * np.pi * y / 0.09) ** 2)
    atten += 0.05 * mediastinum + 0.05 * spine * inside
    atten += _ribs(rng, x, y, a, inside) * (0.35 + 0.65 * lungs) + _clavicles(x, y) * inside

    # Benign shadows in either class, drawn in the same units as the opacities they mimic.
    if a.thymus:
        side = 1 if rng.uniform() < 0.5 else -1
        r2 = ((x - side * 0.17) / 0.12) ** 2 + ((y + 0.38) / 0.2) ** 2
        atten += 0.1 * a.thymus * _sig((1.0 - r2) / 0.2) * lungs
    if a.soft_tissue:
        folds = _sig((np.abs(x) - 0.5) / 0.08) * _sig((y - 0.1) / 0.1)
        atten += 0.08 * a.soft_tissue * folds * inside
    if rng.uniform() < 0.3 * spec.distractor_rate:  # a small benign round density
        cx, cy = rng.uniform(-0.6, 0.6), rng.uniform(-0.5, 0.4)
        atten += 0.08 * np.exp(-((x - cx) ** 2 + (y - cy) ** 2) / 0.003) * inside

    if film.kind == "bacteria":
        density = spec.opacity_scale * rng.uniform(0.7, 1.1)
        lung = left if a.side == -1 else right
        atten += density * depth * _consolidation(rng, x, y, a, lung)
    elif film.kind == "virus":
        density = spec.opacity_scale * rng.uniform(0.7, 1.2)
        atten += density * depth * _interstitial(rng, x, y, lungs)

    return _expose(rng, atten, (height, width), spec)


def _expose(rng: np.random.Generator, atten: Array, size: Shape, spec: SyntheticSpec) -> Array:
    """Attenuation to display pixels: heel effect, exposure, blur, resize, noise, 8 bits."""
    shape, jitter = atten.shape, spec.exposure_jitter
    heel = 1.0 + 0.05 * jitter * _smooth_noise(rng, shape, 2)
    atten = atten * heel + 0.045 + jitter * rng.uniform(-0.015, 0.015)
    _overlays(rng, atten, leads=rng.uniform() < 0.35 * spec.distractor_rate)
    gain = 1.45 + jitter * rng.uniform(-0.1, 0.1)
    gamma = np.exp(jitter * rng.uniform(-0.15, 0.15))
    image = np.clip(gain * atten + 0.01 + jitter * rng.uniform(-0.03, 0.03), 0.0, 1.0) ** gamma
    image = cv2.GaussianBlur(image, (0, 0), rng.uniform(0.4, 1.0))
    height, width = size
    image = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR)
    sigma = spec.noise_scale * rng.uniform(0.01, 0.035)
    grain = rng.standard_normal((height, width), dtype=np.float32)
    image = image + sigma * grain
    return np.clip(image * 255.0 + 0.5, 0, 255).astype(np.uint8)
