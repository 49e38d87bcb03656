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

    def job_traceback(self, who: Principal, job_id: int) -> str:
        """A failed job's traceback (kept in its run folder), for admins only; '' otherwise."""
        if not who.is_admin:
            return ""
        self.client.get(int(job_id), who)  # exists (and an admin sees every job)
        from workers.runner import TRACEBACK_FILE

        path = self.store.run_dir(int(job_id)) / TRACEBACK_FILE
        try:
            return path.read_text(errors="replace")
        except OSError:
            return ""

    def job_curve(self, who: Principal, job_id: int) -> dict:
        """A job's live training curve (its run folder's curve.json), for whoever may see the job."""
        import json

        self.client.get(int(job_id), who)  # raises JobNotFound for a job ``who`` may not see
        from workers.runner import CURVE_FILE

        try:
            data = json.loads((self.store.run_dir(int(job_id)) / CURVE_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return {str(k): v for k, v in data.items() if isinstance(v, list)} if isinstance(data, dict) else {}
