"""What operations did, and who hears of it.

- ``model``: the event row every unit of work writes (the audit trail, and the outbox)
- ``noise``: anonymous refusals, counted per cause and window instead of stored one by one
- ``results``: signed results (compact JWS) and the JWKS that verifies them
- ``signing``: Standard Webhooks headers, ``v1`` (HMAC-SHA256) and ``v1a`` (Ed25519)
- ``ssrf``: which URLs and addresses a webhook may be sent to; the guarded httpx transport
- ``schedule``: pure delivery decisions (retry schedule, Retry-After, circuit breaker, order)
- ``delivery``: one attempt (``WebhookSender``) and the per-endpoint ``Dispatcher``

docs/architecture.md places it in the pipeline; docs/webhooks.md and docs/signed-results.md
describe delivery and signatures.
"""
