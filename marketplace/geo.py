"""Distances on the Earth without a database extension.

A query first narrows providers to a bounding box (plain indexed comparisons that SQLite and
PostgreSQL both run), then the exact great-circle distance decides and sorts. At city scale
the haversine formula on a sphere of the mean Earth radius is within 0.5% of the ellipsoid.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

EARTH_RADIUS_M = 6_371_008.8  # mean radius (IUGG)
METRES_PER_DEGREE_LAT = math.pi * EARTH_RADIUS_M / 180


@dataclass(frozen=True)
class Box:
    min_lat: float
    max_lat: float
    min_lng: float
    max_lng: float


def haversine_m(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi = phi2 - phi1
    dlmb = math.radians(lng2 - lng1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(min(1.0, math.sqrt(a)))


def bounding_box(lat: float, lng: float, radius_m: float) -> Box:
    """A box that contains every point within ``radius_m`` (slightly more, never less)."""
    # The tiny factor keeps a point exactly on the circle inside despite float rounding.
    dlat = radius_m / METRES_PER_DEGREE_LAT * (1 + 1e-9)
    # Widest at the box's edge nearer the pole; cos never reaches 0 at a city's latitude.
    widest = max(abs(lat) + dlat, 0.0)
    dlng = radius_m / (METRES_PER_DEGREE_LAT * max(math.cos(math.radians(min(widest, 89.9))), 1e-6))
    return Box(lat - dlat, lat + dlat, lng - dlng, lng + dlng)
