"""Device notifications: wake an app when a backend-initiated operation waits for it.

The interface and its outcomes are in :mod:`.base`, the providers in :mod:`.webhook`,
:mod:`.fcm` and :mod:`.apns`, and the registry that picks one per push target in
:mod:`.registry`. A notification says only "poll now"; see :class:`.base.PushHint`.
"""
