"""Shared fixtures. Tests never write into the checkout: runs go to tmp_path."""

from __future__ import annotations

import os

import pytest

from post_helpers import write_post

os.environ.setdefault("NUMBA_NUM_THREADS", "2")


@pytest.fixture
def post_factory():
    return write_post
