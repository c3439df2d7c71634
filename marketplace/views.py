"""The marketplace's HTML blueprint; the pages are in views_* modules named for whom they serve.

- ``views_public``: the marketplace anyone can browse (search, providers, services);
- ``views_provider``: a provider's dashboard (application, profile, documents, staff);
- ``views_services``: the provider's catalogue (services, prices, beds);
- ``views_bookings``: booking and reviewing; the provider's bookings;
- ``views_complaints``: complaints and the bureau's handling of them, credit scores;
- ``views_certification``: the bureau's certification queue, star levels.
"""

from flask import Blueprint

bp = Blueprint(
    "marketplace",
    __name__,
    url_prefix="/marketplace",
    template_folder="templates",
    static_folder="static",
)
