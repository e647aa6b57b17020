"""Integrations with other tools, each behind an optional extra.

Nothing here is imported by ``import event_pipeline``; import the submodule you need, for instance
``from event_pipeline.contrib.opentelemetry import OpenTelemetryHook`` (extra ``otel``:
``pip install -e ".[otel]"`` from a clone).
"""
