"""Registry pull and push: the client side (`pull`, `push`, `credentials`) and the `/v2/` routes.

Both sides read manifests with `server.manifest.parse(raw, strict=True)`;
`storage` is the registry's only way to the store's files.
"""
