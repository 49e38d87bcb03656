"""Persistence for the gtapp service: settings (``settings``), the SQLAlchemy schema
(``models``) with Alembic migrations (``migrations``), engines and sessions (``db``),
accounts (``accounts``), datasets/model pairs/mappers (``catalog``), the privacy ledger
(``ledger``) and the content-addressed artifact store (``artifacts``).

The core library ``gtapp`` never imports this package.
"""
