"""Layer 1, the contracts: models, events, errors, settings, input parsing and validation, OpenAI formats.

Plain pydantic and small pure helpers: no I/O, no engine, no web framework. Every other layer
imports these; these import nothing above them. See docs/architecture.md.
"""
