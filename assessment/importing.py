"""Bulk import of residents and assessments from CSV or XLSX (see issue 3, item 5)."""
