"""In-memory backend: for unit tests and as a benchmark baseline."""

from storage.memory.repository import MemoryRepository

__all__ = ["MemoryRepository"]
