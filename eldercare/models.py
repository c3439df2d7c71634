"""Import every mapped class so that the metadata (and Alembic) sees all tables."""

from eldercare.account_links import AccountLinkRequest
from eldercare.accounts import FamilyLink, LoginThrottle, User, UserRole
from eldercare.audit import AuditLog
from eldercare.job_runs import JobRun
from eldercare.notifications import Notification
from eldercare.residents import District, Resident
from eldercare.tokens import ApiToken
from eldercare.user_sessions import UserSession

__all__ = [
    "AccountLinkRequest",
    "ApiToken",
    "AuditLog",
    "District",
    "FamilyLink",
    "JobRun",
    "LoginThrottle",
    "Notification",
    "Resident",
    "User",
    "UserRole",
    "UserSession",
]
