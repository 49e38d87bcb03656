"""Organisations, users, roles and argon2 password hashes, on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest

from storage import accounts
from storage.db import session_scope
from storage.models import User


def _name(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def test_create_and_authenticate(settings):
    org, user = _name("org"), _name("u")
    with session_scope(settings=settings) as s:
        u = accounts.create_user(s, org, user, "correct horse", role="member")
        assert u.password_hash.startswith("$argon2id$") and "correct horse" not in u.password_hash
    with session_scope(settings=settings) as s:
        p = accounts.authenticate(s, user, "correct horse")
        assert p is not None and p.username == user and p.role == "member" and not p.is_admin
        assert accounts.authenticate(s, user, "wrong password") is None
        assert accounts.authenticate(s, _name("nobody"), "correct horse") is None


def test_roles_duplicates_and_weak_passwords(settings):
    org = _name("org")
    with session_scope(settings=settings) as s:
        admin = accounts.create_user(s, org, _name("a"), "long enough pw", role="admin")
        assert admin.is_admin
        with pytest.raises(ValueError, match="role"):
            accounts.create_user(s, org, _name("x"), "long enough pw", role="root")
        with pytest.raises(ValueError, match="at least"):
            accounts.create_user(s, org, _name("x"), "short")
        with pytest.raises(ValueError, match="already exists"):
            accounts.create_user(s, org, admin.username, "long enough pw")
        with pytest.raises(ValueError, match="bad username"):
            accounts.create_user(s, org, "../etc", "long enough pw")


def test_user_without_password_cannot_log_in(settings):
    name = _name("np")
    with session_scope(settings=settings) as s:
        accounts.create_user(s, _name("org"), name, None)
    with session_scope(settings=settings) as s:
        assert accounts.authenticate(s, name, "") is None
        accounts.set_password(s, name, "now a password")
    with session_scope(settings=settings) as s:
        assert accounts.authenticate(s, name, "now a password") is not None


def test_first_admin_only_on_empty_db(tmp_path):
    from storage.settings import Settings

    st = Settings(data_dir=tmp_path, database_url=f"sqlite:///{tmp_path / 'a.db'}", first_admin_password="bootstrap-pw",
                  _env_file=None)
    with session_scope(settings=st) as s:
        first = accounts.ensure_first_admin(s, st)
        assert first is not None and first.role == "admin" and first.username == "admin"
        assert accounts.ensure_first_admin(s, st) is None
        assert s.query(User).count() == 1
    with session_scope(settings=st) as s:
        assert accounts.authenticate(s, "admin", "bootstrap-pw") is not None
