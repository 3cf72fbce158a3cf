"""The demo's pinned packages: fetched with pip and npm, checked by sha256, unpacked safely."""
