"""CI runs the suite twice; this proves the second run really uses MariaDB and Redis.

`.ci/run` sets TRACESITE_EXPECT_BACKENDS=mysql+redis for that run.
"""

import os

import pytest
from channels.layers import InMemoryChannelLayer, get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.db import connections

EXPECTED = os.environ.get("TRACESITE_EXPECT_BACKENDS", "")


@pytest.mark.skipif(not EXPECTED, reason="TRACESITE_EXPECT_BACKENDS is not set")
def test_it_runs_on_the_expected_backends():
    vendor, layer = EXPECTED.split("+")
    assert connections["default"].vendor == vendor
    assert connections["agent"].vendor == vendor
    assert isinstance(get_channel_layer().layer, {"redis": RedisChannelLayer, "memory": InMemoryChannelLayer}[layer])
