"""The bureau's certification queue and decisions, and star levels."""

from marketplace.views import bp  # noqa: F401  (routes are added to it)
