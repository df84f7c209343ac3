"""Alembic migrations of the profile store (applied by ``profiles.database.upgrade_schema`` on open)."""
