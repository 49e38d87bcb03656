"""Jobs from the dashboard: submit (through workers.client, which checks tenancy, the privacy
ledger and the fair share), and the job kinds a user may start."""

from __future__ import annotations

from storage.accounts import Principal
from ui.service.base import ServiceBase

class Jobs(ServiceBase):
    def submit(self, who: Principal, kind: str, params: dict) -> int:
        return self.client.submit(kind, params, who)

    def job_kinds(self, who: Principal) -> dict[str, dict]:
        """Registered job kinds and whether ``who`` may submit them. Read from the registry
        only: ``JobClient.kinds()`` also checks availability by importing each kind's gtapp
        module (and so torch), which a page load must not do."""
        from workers.jobs import REGISTRY

        return {k: {"kind": k, "admin_only": spec.admin_only, "queue": spec.queue,
                    "allowed": who.is_admin or not spec.admin_only} for k, spec in sorted(REGISTRY.items())}
