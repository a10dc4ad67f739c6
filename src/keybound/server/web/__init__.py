"""The HTTP side: the one place web code lives. ``app.create_app`` assembles the pipeline
(docs/architecture.md): edge middleware -> router -> the device API (``device``, its own small
ASGI app, sealed or development-plaintext codec) or the relying-party API (``rp``, FastAPI)
-> thin handlers -> a service in its unit of work."""
