"""Server-side, tenancy-checked data access for the dashboard: one :class:`Service`, made of
one part per area (this package's modules), over which every tab builder is a thin layer.

Every dashboard event handler and every download route resolves the signed-in user from
the request (``Service.who``) and then reads or writes only through the service, whose
methods take that :class:`~storage.accounts.Principal`:

* an organisation's datasets, adapters, evaluations, privacy ledger and jobs are visible
  to its own members and to admins (``storage.tenancy``: one helper for every query); a row
  of another organisation reads exactly like a missing one ("adapter 7 not found");
* admin-only operations (accounts, model pairs, mapper promotion, shared benchmark
  results) refuse members with :class:`PermissionError`;
* jobs go through ``workers.client.JobClient``, which applies the same rules.

Uploads are the files the dashboard itself received (``ui.uploads``): size-checked, copied
under a server-chosen name into a fresh private folder, validated (an adapter in a child
process, see :mod:`ui.validate_child`), stored in the content-addressed artifact store, and
the upload deleted: nothing a user typed becomes a path.

    base.py       settings, store, database session, uploads; names and numbers; user_message
    accounts.py   sign-in, sessions, accounts (admin)
    pairs.py      model pairs, zoo folders, mapper versions, pair sets (shared catalogue)
    datasets.py   an organisation's datasets and their privacy ledger
    adapters.py   an organisation's adapters: upload (validated in a child), listing, download
    results.py    evaluations and stored benchmark results (the Compare tab)
    jobs.py       submitting jobs, the job kinds
    collaborations.py  several organisations pooling TinyLM adapters (storage.collaborations)
"""

from __future__ import annotations

from ui.service.accounts import Accounts
from ui.service.adapters import MAX_ADAPTER_FILES, VALIDATE_TIMEOUT_S, Adapters, validate_in_child
from ui.service.collaborations import Collaborations
from ui.service.base import (KNOWN_FORMATS, PREVIEW_ROWS, USER_FORMAT, MiB, NotFound, ServiceBase, UploadError,
                                 _num, clean_name, safe_filename, user_message)
from ui.service.datasets import Datasets
from ui.service.jobs import Jobs
from ui.service.pairs import Pairs
from ui.service.results import RESULT_FIELDS, Results, normalise_row, parse_results, read_results
from gtapp.choices import USER_METRICS

__all__ = ["Service", "NotFound", "UploadError", "KNOWN_FORMATS", "USER_FORMAT", "USER_METRICS", "PREVIEW_ROWS",
           "MAX_ADAPTER_FILES", "VALIDATE_TIMEOUT_S", "RESULT_FIELDS", "MiB", "clean_name", "normalise_row",
           "parse_results", "read_results", "safe_filename", "user_message", "validate_in_child", "_num"]


class Service(Accounts, Pairs, Datasets, Adapters, Results, Jobs, Collaborations, ServiceBase):
    """The dashboard's data access, bound to one deployment's settings."""

    def bootstrap(self) -> list[str]:
        """First admin, zoo pairs found under ``zoo_dir``, benchmark results kept by an older
        version in a JSON index, the results committed under bench/results; returns what it did."""
        done = self.ensure_first_admin()
        done += self.register_new_zoo_pairs()
        done += self.import_legacy_benchmarks()
        done += self.register_published_benchmarks()
        return done
