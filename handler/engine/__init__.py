"""Engines: the protocol the runner talks to, and the vLLM implementation."""

from handler.engine.base import Completion, Engine

__all__ = ["Completion", "Engine"]
