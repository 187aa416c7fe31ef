"""The spans the code under test ends, for tracing tests: one SDK tracer provider with the
SDK's in-memory exporter, set once per test process (OpenTelemetry's global provider can be
set only once); ``spans()`` clears it and hands it over."""

from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EXPORTER = InMemorySpanExporter()


def spans() -> InMemorySpanExporter:
    """The in-memory exporter of the process's tracer provider (set on the first call),
    emptied."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider()
        provider.add_span_processor(SimpleSpanProcessor(EXPORTER))
        trace.set_tracer_provider(provider)
    EXPORTER.clear()
    return EXPORTER
