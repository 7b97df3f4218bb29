"""Tests here share the session Redis and leave it empty after each module."""

from tests.store_conftest import clean_shared_redis

__all__ = ["clean_shared_redis"]
