"""A large OTLP body is decoded in the decoder process, into exactly what the event loop would
have made of it, and a body that is not an export is refused the same way there."""

from __future__ import annotations

import gzip
import json

import pytest

from tests.test_otlp_ingest import agent_spans, export
from traces.ingest import otlp
from traces.ingest.decoding import Decoder, decode

LIMITS = {"body_limit": 16 * 1024 * 1024, "attribute_limit": 64 * 1024}


@pytest.fixture
async def in_a_process():
    decoder = Decoder(LIMITS["body_limit"], LIMITS["attribute_limit"], inline_bytes=0, processes=True)
    yield decoder
    await decoder.aclose()


async def test_the_decoder_process_gives_what_the_event_loop_would(in_a_process):
    spans = agent_spans() * 60  # 240 spans: three chunks
    body = gzip.compress(json.dumps(export(*spans)).encode())
    here = decode(body, "gzip", otlp.JSON, LIMITS["body_limit"], LIMITS["attribute_limit"])
    there = await in_a_process.decode(body, "gzip", otlp.JSON)
    assert len(there) == 240 and there == here
    assert in_a_process._pool is not None  # it did go to the process


async def test_a_body_that_is_not_an_export_is_refused_by_the_decoder_process_too(in_a_process):
    with pytest.raises(otlp.OtlpError) as refused:
        await in_a_process.decode(b"{not json", "", otlp.JSON)
    assert refused.value.status == 400 and "not valid JSON" in str(refused.value)


async def test_small_bodies_stay_on_the_event_loop():
    decoder = Decoder(LIMITS["body_limit"], LIMITS["attribute_limit"], inline_bytes=1024 * 1024, processes=True)
    records = await decoder.decode(json.dumps(export(*agent_spans())).encode(), "", otlp.JSON)
    assert len(records) == 4 and decoder._pool is None
