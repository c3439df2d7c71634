"""Complaints: filed by elders and families, handled by the bureau; providers' credit scores."""

from marketplace.views import bp  # noqa: F401  (routes are added to it)
