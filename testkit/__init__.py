"""Helpers for gtapp's tests and benchmarks (not installed with gtapp):

* ``services``   real services for tests: Celery worker processes, private Redis and
                 PostgreSQL servers, temporary databases, free ports, small tmpfs mounts
* ``synthetic``  small recipes and synthetic (TinyLM, LLM) update pairs with known relations
"""
