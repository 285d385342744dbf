"""What an operator sees of a running deployment: Prometheus metrics (`metrics.py`) and the ids that
structured logs carry (`context.py`). Layer 1: imports only the standard library, prometheus-client and
python-json-logger, so the handler, the queue, the stores and the server may all use it."""
