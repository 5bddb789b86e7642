"""OCI images: value types (types.py, imageconfig.py), finished images (image.py), OCI layouts
(layout.py), archives for docker load / skopeo (archive.py), and the registry client (registry.py,
auth.py). Each source or sink is its own module; values crossing modules are frozen dataclasses."""
