"""Layer 4, the server side: the job lifecycle service, the dispatchers, event sources, and the
HTTP API (`shared.server.api`, the only part that imports FastAPI). See docs/architecture.md.
"""
