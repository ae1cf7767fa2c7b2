"""Storage: the account repository interface and its backends (memory, SQLite, Cloud Spanner)."""
