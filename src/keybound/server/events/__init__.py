"""Events pushed to relying parties: Standard Webhooks signing, endpoint URL policy (SSRF),
retry and ordering rules, and the sender. The outbox that feeds them lives with the unit of
work; docs/webhooks.md describes the whole.

- ``signing``: ``webhook-*`` headers, ``v1`` (HMAC-SHA256) and ``v1a`` (Ed25519), verification
- ``ssrf``: which URLs and addresses may be called; the guarded httpx transport
- ``schedule``: pure decisions (retry schedule, Retry-After, circuit breaker, order)
- ``delivery``: one attempt (``WebhookSender``) and the per-endpoint ``Dispatcher``
"""
