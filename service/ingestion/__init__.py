"""Store notification ingestion (docs/INGESTION.md): the HTTP ingress (App Store Server
Notifications v2, Stripe webhooks) and the Google Play RTDN subscriber, each verifying with
the store's own library before the use case (service.usecases.ingestion) maps and records."""
