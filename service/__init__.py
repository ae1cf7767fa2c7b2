"""The entitlement and offer service.

`__version__` is the server's version and `API_VERSION` the version of the API in protos/;
both are computed once, in service.version."""

from service.version import API_VERSION
from service.version import SERVER_VERSION as __version__

__all__ = ["API_VERSION", "__version__"]
