"""Organisations, users, roles and passwords (argon2id via argon2-cffi)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Optional, Union

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.models import ROLES, Organisation, User

_hasher = PasswordHasher()
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@\-]{0,99}$")
MIN_PASSWORD = 8


@dataclass(frozen=True)
class Principal:
    """Who is acting: what the job API and the dashboard check permissions against."""

    user_id: int
    username: str
    org_id: int
    role: str

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    @classmethod
    def of(cls, user: User) -> "Principal":
        return cls(user.id, user.username, user.org_id, user.role)


UserRef = Union[Principal, User, int, str]


def hash_password(password: str) -> str:
    if not isinstance(password, str) or len(password) < MIN_PASSWORD:
        raise ValueError(f"password must be at least {MIN_PASSWORD} characters")
    return _hasher.hash(password)


def verify_password(password_hash: Optional[str], password: str) -> bool:
    if not password_hash:
        return False
    try:
        return _hasher.verify(password_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


def get_or_create_org(session: Session, name: str) -> Organisation:
    if not _NAME.match(name or ""):
        raise ValueError(f"bad organisation name {name!r}: letters, digits, _ . @ - (max 100)")
    org = session.scalars(select(Organisation).where(Organisation.name == name)).one_or_none()
    if org is None:
        org = Organisation(name=name)
        session.add(org)
        session.flush()
    return org


def create_user(session: Session, org: str, username: str, password: Optional[str], role: str = "member") -> User:
    """Create a user in ``org`` (created if new). ``password=None``: cannot log in yet."""
    if role not in ROLES:
        raise ValueError(f"role must be one of {ROLES}, got {role!r}")
    if not _NAME.match(username or ""):
        raise ValueError(f"bad username {username!r}: letters, digits, _ . @ - (max 100)")
    if session.scalars(select(User).where(User.username == username)).one_or_none() is not None:
        raise ValueError(f"user '{username}' already exists")
    o = get_or_create_org(session, org)
    user = User(org_id=o.id, username=username, role=role,
                password_hash=hash_password(password) if password is not None else None)
    session.add(user)
    session.flush()
    return user


def set_password(session: Session, username: str, password: str) -> None:
    user = find_user(session, username)
    user.password_hash = hash_password(password)


def find_user(session: Session, ref: UserRef) -> User:
    if isinstance(ref, User):
        return ref
    if isinstance(ref, Principal):
        ref = ref.user_id
    q = select(User).where(User.id == ref) if isinstance(ref, int) else select(User).where(User.username == ref)
    user = session.scalars(q).one_or_none()
    if user is None:
        raise LookupError(f"no such user: {ref!r}")
    return user


def principal(session: Session, ref: UserRef) -> Principal:
    if isinstance(ref, Principal):
        return ref
    user = find_user(session, ref)
    if not user.is_active:
        raise PermissionError(f"user '{user.username}' is disabled")
    return Principal.of(user)


def authenticate(session: Session, username: str, password: str) -> Optional[Principal]:
    """The user's principal if the password matches, else None (same answer for unknown users)."""
    user = session.scalars(select(User).where(User.username == username)).one_or_none()
    if user is None:
        _hasher.hash("timing-equaliser")  # don't reveal which usernames exist by timing
        return None
    if not user.is_active or not verify_password(user.password_hash, password):
        return None
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = _hasher.hash(password)
    return Principal.of(user)


def ensure_first_admin(session: Session, settings) -> Optional[User]:
    """On an empty database, create the first admin from settings; returns it if created."""
    if session.scalar(select(func.count()).select_from(User)):
        return None
    return create_user(session, settings.first_admin_org, settings.first_admin_username,
                       settings.first_admin_password, role="admin")
