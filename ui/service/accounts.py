"""Sign-in, sessions and accounts (admins create, enable and disable users)."""

from __future__ import annotations

import datetime as dt
from typing import Any, Optional

from sqlalchemy import delete, select

from storage.accounts import Principal, authenticate, create_user, ensure_first_admin, hash_password, principal
from storage.models import ROLES, Organisation, RevokedSession, User, utcnow
from storage.tenancy import owned
from ui.service.base import NotFound, ServiceBase, _iso

class Accounts(ServiceBase):
    def ensure_first_admin(self) -> list[str]:
        """On an empty database, the first admin from the settings."""
        with self.session() as s:
            if ensure_first_admin(s, self.settings) is None:
                return []
        return [f"created first admin '{self.settings.first_admin_username}' in '{self.settings.first_admin_org}'"]
    def principal(self, username: Optional[str]) -> Principal:
        if not username:
            raise PermissionError("not signed in")
        with self.reading() as s:
            try:
                return principal(s, username)
            except LookupError:
                raise PermissionError("not signed in") from None

    def who(self, request: Any) -> Principal:
        """The signed-in user of a Gradio event (``request.username`` is set by the
        session-cookie auth dependency, server-side; never by the page)."""
        return self.principal(getattr(request, "username", None) if request is not None else None)

    def authenticate(self, username: str, password: str, address: str = "unknown") -> Optional[Principal]:
        """The principal for a right password, else None; raises ``storage.throttle.SignInLocked``
        (without checking the password) while this username or address must wait."""
        from storage import throttle

        with self.session() as s:
            throttle.check(s, username, address, self.settings)
        with self.session() as s:
            who = authenticate(s, username, password)
            if who is None:
                throttle.record_failure(s, username, address, self.settings)
            else:
                throttle.clear(s, username)
            return who

    def account(self, who: Principal) -> dict:
        with self.reading() as s:
            user = s.get(User, who.user_id)
            return {"username": user.username, "org": user.org.name, "role": user.role, "org_id": user.org_id}

    def change_password(self, who: Principal, current: str, new: str, repeat: str) -> str:
        if new != repeat:
            raise ValueError("the new passwords differ")
        with self.session() as s:
            if authenticate(s, who.username, current or "") is None:
                raise ValueError("the current password is wrong")
            user = s.get(User, who.user_id)
            user.password_hash = hash_password(new)
        return "password changed; other sessions of this account are signed out"

    def password_tag(self, user_id: int) -> Optional[tuple[str, str, bool]]:
        """(username, password hash, active) for the session check."""
        with self.reading() as s:
            user = s.get(User, user_id)
            if user is None:
                return None
            return user.username, user.password_hash or "", bool(user.is_active)

    def revoke_session(self, user_id: int, nonce: str, expires_at: float) -> None:
        """Record a signed-out session (its nonce) so every dashboard process refuses it until
        it would have expired (``expires_at``: Unix seconds); drops records already expired."""
        with self.session() as s:
            s.execute(delete(RevokedSession).where(RevokedSession.expires_at < utcnow()))
            if s.get(RevokedSession, nonce) is None and s.get(User, user_id) is not None:
                s.add(RevokedSession(nonce=nonce, user_id=user_id,
                                     expires_at=dt.datetime.fromtimestamp(expires_at, dt.timezone.utc)))

    def session_revoked(self, nonce: str) -> bool:
        with self.reading() as s:
            return s.get(RevokedSession, nonce) is not None

    # ------------------------------------------------------------------ accounts (admin)
    def list_users(self, who: Principal) -> list[dict]:
        self.require_admin(who)
        with self.session() as s:
            rows = s.execute(select(User, Organisation.name).join(Organisation, User.org_id == Organisation.id)
                             .order_by(Organisation.name, User.username)).all()
            return [{"id": u.id, "username": u.username, "org": org, "role": u.role, "active": u.is_active,
                     "can_sign_in": bool(u.password_hash), "created": _iso(u.created_at)} for u, org in rows]

    def create_user(self, who: Principal, org: str, username: str, password: str, role: str) -> str:
        self.require_admin(who)
        if role not in ROLES:
            raise ValueError(f"role must be one of {', '.join(ROLES)}")
        with self.session() as s:
            user = create_user(s, (org or "").strip(), (username or "").strip(), password, role=role)
            return f"user '{user.username}' ({role}) created in organisation '{org.strip()}'"

    def set_active(self, who: Principal, username: str, active: bool) -> str:
        self.require_admin(who)
        with self.session() as s:
            user = s.scalars(select(User).where(User.username == username)).one_or_none()
            if user is None:
                raise NotFound(f"user '{username}' not found")
            if user.id == who.user_id and not active:
                raise ValueError("you cannot disable your own account")
            user.is_active = bool(active)
            return f"user '{username}' {'enabled' if active else 'disabled'}"

    def usernames(self, who: Principal) -> dict[int, str]:
        """user id -> username for the users ``who`` may see (own organisation; admins all)."""
        with self.reading() as s:
            q = owned(select(User.id, User.username), User, who)
            return {i: n for i, n in s.execute(q)}

    def org_names(self) -> dict[int, str]:
        with self.reading() as s:
            return {i: n for i, n in s.execute(select(Organisation.id, Organisation.name))}
