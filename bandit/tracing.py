"""Tracing with OpenTelemetry: the spans of a decision (the service's ``cmab.decide`` and
``cmab.decide_batch``), of a worker batch (``cmab.worker.batch``) and of a checkpoint
(``cmab.worker.checkpoint``), and how a decision's trace reaches its outcome.

Off unless a tracer provider is set (``configure_export``, or the embedding application's own
``trace.set_tracer_provider``): the API's tracer is then a no-op, spans do not record, and the
hooks build no attribute, link or header (they ask ``span.is_recording()`` first).

A decision's trace travels with it where the sender passes it: the decision's answer carries
the ``traceresponse`` header (W3C Trace Context: ``00-<trace id>-<span id>-<flags>`` of its
decide span), and a send or outcome may carry that value as its ``traceparent`` field. The
span of the worker batch (or of the ``POST /v1/events`` request) that reads such an event
links to the decision's span.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable

import orjson
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanContext, TraceFlags
from opentelemetry.trace.propagation import set_span_in_context

from bandit.errors import InvalidInputError

__all__ = ["TRACEPARENT_PATTERN", "configure_export", "decided", "link_traceparents",
           "link_values", "parent", "span_context", "start", "traceparent", "tracer"]

tracer = trace.get_tracer("cmab")
# W3C Trace Context version 00: the trace id and span id of a span, and its flags.
TRACEPARENT_PATTERN = r"^00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
_TRACEPARENT = re.compile(TRACEPARENT_PATTERN)
# A traceparent value inside an event's JSON (the worker links without decoding the record).
_FIELD = re.compile(rb'"traceparent"\s*:\s*"(00-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2})"')
_EXPORTER = "opentelemetry-exporter-otlp-proto-http"


def traceparent(span: Span) -> str:
    """The W3C ``traceparent`` value of ``span``: what a decision's answer carries."""
    context = span.get_span_context()
    return (f"00-{context.trace_id:032x}-{context.span_id:016x}-"
            f"{int(context.trace_flags):02x}")


def span_context(value: str | bytes) -> SpanContext | None:
    """The remote span context of a ``traceparent`` value; None when it is not one (or names
    the all-zero trace or span, which W3C Trace Context calls invalid)."""
    text = value.decode("ascii", "replace") if isinstance(value, bytes) else value
    if not _TRACEPARENT.match(text):
        return None
    context = SpanContext(int(text[3:35], 16), int(text[36:52], 16), is_remote=True,
                          trace_flags=TraceFlags(int(text[53:55], 16)))
    return context if context.is_valid else None


def parent(value: str | bytes | None) -> Context | None:
    """The context whose span is a request's ``traceparent`` header (None: a root span)."""
    remote = None if value is None else span_context(value)
    return None if remote is None else set_span_in_context(trace.NonRecordingSpan(remote))


def link_traceparents(span: Span, values: Iterable[bytes | None]) -> int:
    """Link ``span`` (recording) to the span of every ``traceparent`` field in these JSON
    records (events a sender gave a decision's trace); the number of links."""
    n = 0
    for value in values:
        if value is None or b'"traceparent"' not in value:
            continue
        for match in _FIELD.finditer(value):
            context = span_context(match[1])
            if context is not None:
                span.add_link(context)
                n += 1
    return n


def link_values(span: Span, values: Iterable[str | None]) -> int:
    """Link ``span`` (recording) to the spans of these ``traceparent`` values (events' fields;
    None skipped); the number of links."""
    n = 0
    for value in values:
        context = None if value is None else span_context(value)
        if context is not None:
            span.add_link(context)
            n += 1
    return n


def configure_export(endpoint: str | None, service_name: str) -> bool:
    """Export spans over OTLP/HTTP to ``endpoint`` (else ``OTEL_EXPORTER_OTLP_ENDPOINT``), as
    ``service_name``; without either, nothing (tracing stays off): whether it exports. The
    exporter is an optional package: without it, a configured endpoint is an error naming
    the package to install, not spans silently dropped."""
    endpoint = endpoint or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or None
    if endpoint is None:
        return False
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found]
            OTLPSpanExporter,
        )
    except ImportError:
        raise InvalidInputError(
            f"otlp_endpoint {endpoint}: the OTLP exporter is not installed (pip install "
            f"{_EXPORTER}), so spans cannot be exported; unset otlp_endpoint (CMAB_OTLP_ENDPOINT, "
            "OTEL_EXPORTER_OTLP_ENDPOINT) to run without tracing") from None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": service_name}))
    # The base endpoint, as OTEL_EXPORTER_OTLP_ENDPOINT means it: traces go to /v1/traces.
    provider.add_span_processor(BatchSpanProcessor(
        OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")))
    trace.set_tracer_provider(provider)
    return True


def start(name: str, header: bytes | str | None = None) -> Span:
    """A span of the service (``cmab.decide``, ``cmab.decide_batch``), the child of the
    request's ``traceparent`` header when it has one; the caller ends it."""
    return tracer.start_span(name, context=None if header is None else parent(header))


def decided(span: Span, campaign: str, count: int, model_version: int | None,
            answer: bytes | None = None) -> dict[str, str] | None:
    """Describe a recording decide span (campaign, decisions, model version: given, or read
    from a single decision's JSON ``answer``); the headers of its answer (``traceresponse``),
    None when not recording."""
    if not span.is_recording():
        return None
    if model_version is None and answer is not None:
        model_version = orjson.loads(answer).get("model_version")
    span.set_attribute("cmab.campaign", campaign)
    span.set_attribute("cmab.decisions", count)
    if model_version is not None:
        span.set_attribute("cmab.model_version", int(model_version))
    return {"traceresponse": traceparent(span)}
