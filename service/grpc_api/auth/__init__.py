"""Authentication and authorization of calls, transport security, and the generated local
development credentials.

Callers send a bearer token in the call metadata (`authorization: Bearer <token>`). The
credentials file lists principals with the SHA-256 digest of their token, never the token:

    principals:
      - name: checkout-backend      # who, as written to the audit log
        role: admin                 # admin: every RPC; service: the read RPCs
        token_sha256: 5e884898da28047151d0e56f8dc6292773603d0d6aabbdd62a11ef721d1542d8

(YAML or JSON with the same shape.) A presented token is hashed and compared with every
principal's digest in constant time. Authorization is deny by default: the read services
need the role `service` or `admin`, the write service `admin`; only health checks and server
reflection are open; any other method is refused. A missing, malformed or unknown credential
answers UNAUTHENTICATED; a known one lacking the role PERMISSION_DENIED.

Modules: `credentials` (the credentials file), `policy` (who may call what),
`authentication` (token to principal; the principal of the call being served), `client`
(sending a token), `tls` (transport security), `dev` (the generated development
credentials). The RPC guard (service.grpc_api.guard) applies them to every call.
"""

from service.grpc_api.auth.authentication import (
    Authenticator,
    bearer_token,
    current_principal,
)
from service.grpc_api.auth.client import BearerTokenInterceptor, bearer_metadata, with_bearer_token
from service.grpc_api.auth.credentials import (
    AUTHORIZATION,
    Credential,
    CredentialsError,
    Principal,
    Role,
    credentials_yaml,
    load_credentials,
    parse_credentials,
    token_digest,
)
from service.grpc_api.auth.dev import (
    DEV_CREDENTIALS_FILE,
    DEV_PRINCIPALS,
    DEV_TOKENS_FILE,
    DevCredentials,
    ensure_dev_credentials,
    read_dev_tokens,
)
from service.grpc_api.auth.policy import (
    ADMIN,
    ADMIN_SERVICE,
    DEFAULT_POLICY,
    DENY,
    ENTITLEMENT_SERVICE,
    EVENT_SERVICE,
    OFFER_SERVICE,
    OPEN,
    OPEN_SERVICES,
    READ,
    AccessPolicy,
    MethodRule,
    Refusal,
    access_check,
)
from service.grpc_api.auth.tls import channel_credentials, server_credentials

__all__ = [
    "ADMIN",
    "ADMIN_SERVICE",
    "AUTHORIZATION",
    "DEFAULT_POLICY",
    "DENY",
    "DEV_CREDENTIALS_FILE",
    "DEV_PRINCIPALS",
    "DEV_TOKENS_FILE",
    "ENTITLEMENT_SERVICE",
    "EVENT_SERVICE",
    "OFFER_SERVICE",
    "OPEN",
    "OPEN_SERVICES",
    "READ",
    "AccessPolicy",
    "Authenticator",
    "BearerTokenInterceptor",
    "Credential",
    "CredentialsError",
    "DevCredentials",
    "MethodRule",
    "Principal",
    "Refusal",
    "Role",
    "access_check",
    "bearer_metadata",
    "bearer_token",
    "channel_credentials",
    "credentials_yaml",
    "current_principal",
    "ensure_dev_credentials",
    "load_credentials",
    "parse_credentials",
    "read_dev_tokens",
    "server_credentials",
    "token_digest",
    "with_bearer_token",
]
