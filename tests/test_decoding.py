"""A large OTLP body is decoded in the decoder process, into exactly what the event loop would
have made of it, and a body that is not an export is refused the same way there."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from tests.test_otlp_ingest import ROOT, TRACE, agent_spans, export, nested_object, span
from traces.ingest import otlp
from traces.ingest.decoding import Decoder, decode
from traces.ingest.spans import MAX_ATTRIBUTE_DEPTH

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


def nested_body(depth: int) -> bytes:
    """An export with a list nested ``depth`` deep where the resource's attributes would be."""
    return ('{"resourceSpans": [{"resource": {"attributes": ' + "[" * depth + "]" * depth + "}}]}").encode()


def deep_attribute_export(depth: int) -> bytes:
    root = span(TRACE, ROOT, None, "invoke_agent shop", {"input.value": nested_object(depth)}, 0, 1)
    return json.dumps(export(root)).encode()


@pytest.mark.parametrize("depth", [1000, 100_000])
async def test_a_body_nested_too_deeply_is_not_an_export_on_the_event_loop_and_in_the_process(in_a_process, depth):
    inline = Decoder(LIMITS["body_limit"], LIMITS["attribute_limit"], inline_bytes=1024 * 1024, processes=True)
    for decoder in (inline, in_a_process):
        with pytest.raises(otlp.OtlpError) as refused:
            await decoder.decode(nested_body(depth), "", otlp.JSON)
        assert refused.value.status == 400
        assert (
            str(refused.value)
            == f"the body is not an OTLP export: JSON nested deeper than {otlp.MAX_BODY_DEPTH} levels"
        )
    assert inline._pool is None and in_a_process._pool is not None


@pytest.mark.parametrize("depth", [MAX_ATTRIBUTE_DEPTH + 1, 1000, 5000])
async def test_a_json_attribute_nested_too_deeply_stays_text_on_the_event_loop_and_in_the_process(in_a_process, depth):
    inline = Decoder(LIMITS["body_limit"], LIMITS["attribute_limit"], inline_bytes=1024 * 1024, processes=True)
    records = [await decoder.decode(deep_attribute_export(depth), "", otlp.JSON) for decoder in (inline, in_a_process)]
    assert records[0] == records[1]
    (root,) = records[0]
    assert root.view.inputs == {"input": nested_object(depth)}
    assert inline._pool is None and in_a_process._pool is not None


async def test_a_json_attribute_nested_up_to_the_limit_is_read_as_json():
    inline = Decoder(LIMITS["body_limit"], LIMITS["attribute_limit"], inline_bytes=1024 * 1024, processes=False)
    (root,) = await inline.decode(deep_attribute_export(MAX_ATTRIBUTE_DEPTH), "", otlp.JSON)
    assert root.view.inputs == json.loads(nested_object(MAX_ATTRIBUTE_DEPTH))


def test_the_decoder_process_ends_with_a_server_killed_with_sigkill(tmp_path):
    """A server killed outright leaves no decoder process behind (its pool's worker would wait on
    its task queue for ever)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    script = (
        "import asyncio, os, sys\n"
        "from traces.ingest.decoding import Decoder\n"
        "async def main():\n"
        "    decoder = Decoder(1 << 20, 1 << 16, inline_bytes=0)\n"
        "    await decoder.start()\n"
        "    print(' '.join(str(p) for p in decoder._pool._processes), flush=True)\n"
        "    await asyncio.sleep(600)\n"
        "asyncio.run(main())\n"
    )
    project = Path(__file__).resolve().parent.parent
    server = subprocess.Popen([sys.executable, "-c", script], cwd=project, stdout=subprocess.PIPE, text=True)
    worker = int(server.stdout.readline().split()[0])
    os.kill(worker, 0)  # it runs
    server.send_signal(signal.SIGKILL)
    server.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            return
        time.sleep(0.1)
    os.kill(worker, signal.SIGKILL)
    pytest.fail("the decoder process outlived its server by 10 s")
