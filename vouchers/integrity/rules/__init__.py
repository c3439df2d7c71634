"""The anomaly rules, one module per topic; each module lists its ``RULES``.

``RULES`` maps a rule's code to the ``Rule``; ``DEFAULTS`` are the thresholds migration 0024
seeds (a test keeps them equal to the migration's). A new rule is a module here, a line in
``_MODULES``, a default and a migration seeding its row.
"""

from __future__ import annotations

from vouchers.integrity.rules import at_cap, death, devices, frequency, length, review, visits
from vouchers.integrity.rules.base import Finding, Rule

_MODULES = (death, visits, length, frequency, at_cap, devices, review)

RULES: dict[str, Rule] = {rule.code: rule for module in _MODULES for rule in module.RULES}

DEFAULTS = {
    "after_death": {},
    "during_stay": {},
    "staff_overlap": {"min_overlap_minutes": 1},
    "impossible_travel": {"max_speed_kmh": 60},
    "far_check_in": {"distance_m": 1600},
    "visit_length": {"min_minutes": 5, "max_minutes": 720},
    "daily_frequency": {"max_per_day": 3},
    "category_frequency": {
        "limits": {
            "meal_help": {"per": "day", "max": 3},
            "bathing": {"per": "month", "max": 8},
            "cleaning": {"per": "month", "max": 12},
            "rehab_nursing": {"per": "day", "max": 1},
            "hairdressing": {"per": "month", "max": 2},
        }
    },
    "at_cap": {"min_redemptions": 20, "times_peers": 2.0, "min_share_pct": 50},
    "shared_device": {"max_elders_per_day": 8},
    "outside_hours": {"grace_minutes": 30},
    "review_sample": {"share_bp": 500},
    "high_value": {"subsidy_fen": 30000},
}

__all__ = ["DEFAULTS", "RULES", "Finding", "Rule"]
