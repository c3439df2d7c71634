"""Distances between real places in Shenyang, and the bounding box the search prefilters with.

The expected distances are computed here independently of ``marketplace.geo``: with the
spherical law of cosines (a different formula from haversine, same sphere) and, as a
rough second opinion, with the equirectangular approximation that a person can do on paper.
"""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from marketplace.geo import EARTH_RADIUS_M, bounding_box, haversine_m

# WGS-84, from the map.
SHENYANG_STATION = (41.7947, 123.3960)  # 沈阳站
SHENYANG_NORTH = (41.8187, 123.4393)  # 沈阳北站
IMPERIAL_PALACE = (41.7968, 123.4558)  # 沈阳故宫
SANHAO_STREET = (41.7741, 123.4356)  # 三好街
WULIHE = (41.7580, 123.4390)  # 五里河


def law_of_cosines_m(a, b) -> float:
    """Great-circle distance by the spherical law of cosines (fine at metre scale in float64)."""
    phi1, lmb1 = map(math.radians, a)
    phi2, lmb2 = map(math.radians, b)
    cos_angle = math.sin(phi1) * math.sin(phi2) + math.cos(phi1) * math.cos(phi2) * math.cos(
        lmb2 - lmb1
    )
    return EARTH_RADIUS_M * math.acos(min(1.0, cos_angle))


def on_paper_m(a, b) -> float:
    """Equirectangular: a degree of latitude is 111,195 m; a degree of longitude that times
    the cosine of the mean latitude (cos 41.8° ≈ 0.745 in Shenyang)."""
    per_degree = 111_195.0
    north = (b[0] - a[0]) * per_degree
    east = (b[1] - a[1]) * per_degree * math.cos(math.radians((a[0] + b[0]) / 2))
    return math.hypot(north, east)


def destination(lat: float, lng: float, bearing_deg: float, distance_m: float):
    """The point ``distance_m`` from (lat, lng) along ``bearing_deg`` (0 = north, 90 = east),
    on the same sphere: the direct problem of spherical trigonometry."""
    phi1, lmb1 = math.radians(lat), math.radians(lng)
    theta, delta = math.radians(bearing_deg), distance_m / EARTH_RADIUS_M
    phi2 = math.asin(
        math.sin(phi1) * math.cos(delta) + math.cos(phi1) * math.sin(delta) * math.cos(theta)
    )
    lmb2 = lmb1 + math.atan2(
        math.sin(theta) * math.sin(delta) * math.cos(phi1),
        math.cos(delta) - math.sin(phi1) * math.sin(phi2),
    )
    return math.degrees(phi2), math.degrees(lmb2)


@pytest.mark.parametrize(
    ("a", "b", "expected_m"),
    [
        # 沈阳站 -> 沈阳北站: 2,669 m north, 3,588 m east: about 4,472 m.
        (SHENYANG_STATION, SHENYANG_NORTH, 4472),
        # 三好街 -> 沈阳故宫: 2,524 m north, 1,675 m east: about 3,029 m.
        (SANHAO_STREET, IMPERIAL_PALACE, 3029),
        # 三好街 -> 五里河: 1,790 m south, 282 m east: about 1,812 m.
        (SANHAO_STREET, WULIHE, 1812),
        # 沈阳站 -> 沈阳故宫: about 4,963 m.
        (SHENYANG_STATION, IMPERIAL_PALACE, 4963),
        # 沈阳北站 -> 五里河: about 6,750 m.
        (SHENYANG_NORTH, WULIHE, 6750),
    ],
)
def test_distances_between_real_places(a, b, expected_m):
    assert law_of_cosines_m(a, b) == pytest.approx(expected_m, abs=1)
    assert haversine_m(*a, *b) == pytest.approx(law_of_cosines_m(a, b), abs=0.01)
    assert haversine_m(*a, *b) == pytest.approx(on_paper_m(a, b), rel=0.001)
    assert haversine_m(*b, *a) == pytest.approx(haversine_m(*a, *b), abs=1e-6)


def test_a_place_is_no_distance_from_itself():
    assert haversine_m(*SANHAO_STREET, *SANHAO_STREET) == 0


def test_one_degree_of_latitude_is_about_111_km():
    # 2πR / 360 with R = 6,371,008.8 m: 111,195 m.
    assert haversine_m(41.0, 123.0, 42.0, 123.0) == pytest.approx(111_195, abs=1)


def test_destination_helper_agrees_with_haversine():
    for bearing in (0, 45, 90, 135, 180, 270):
        point = destination(*SANHAO_STREET, bearing, 999)
        assert haversine_m(*SANHAO_STREET, *point) == pytest.approx(999, abs=1e-6)


def test_bounding_box_of_one_km_in_shenyang():
    box = bounding_box(*SANHAO_STREET, 1000)
    # 1000 m is 0.008993° of latitude; of longitude about 0.0121° at 41.8° N.
    assert box.max_lat - SANHAO_STREET[0] == pytest.approx(0.008993, abs=1e-6)
    assert SANHAO_STREET[0] - box.min_lat == pytest.approx(0.008993, abs=1e-6)
    assert box.max_lng - SANHAO_STREET[1] == pytest.approx(0.0121, abs=0.0002)
    assert box.max_lng - SANHAO_STREET[1] >= 1000 / (111_195 * math.cos(math.radians(41.7741)))


# Shenyang's area, with its outlying districts: 41.2-43.1 N, 122.4-123.9 E. A point exactly
# on the circle due north can land one float ULP (1e-10 m) outside geo.bounding_box's box,
# so the points here are strictly inside; search.py widens the box by a metre for the edge.
@settings(max_examples=500, deadline=None)
@given(
    centre_lat=st.floats(41.2, 43.1),
    centre_lng=st.floats(122.4, 123.9),
    radius_m=st.floats(1, 50_000),
    bearing=st.floats(0, 360),
    fraction=st.floats(0, 1 - 1e-9),
)
def test_bounding_box_never_excludes_a_point_within_the_radius(
    centre_lat, centre_lng, radius_m, bearing, fraction
):
    lat, lng = destination(centre_lat, centre_lng, bearing, radius_m * fraction)
    assert haversine_m(centre_lat, centre_lng, lat, lng) <= radius_m * (1 + 1e-9)
    box = bounding_box(centre_lat, centre_lng, radius_m)
    assert box.min_lat <= lat <= box.max_lat
    assert box.min_lng <= lng <= box.max_lng
