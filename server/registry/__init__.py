"""Registry pull and push: the client side (`pull`, `push`, `credentials`) and the `/v2/` routes.

`protocol` holds what both sides share (media types, limits, manifest validation);
`storage` is the registry's only way to the store's files.
"""
