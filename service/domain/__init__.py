"""The domain: catalog, account state, eligibility rules and decisions.

Plain dataclasses and pure functions. Nothing here imports grpc or a storage backend, so
every rule can be tested (and reasoned about) without a server or a database.
"""
