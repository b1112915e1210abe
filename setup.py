"""Package list of the product wheel (the rest of the metadata is in pyproject.toml).

The repository keeps ``schemas/`` (the one source of plugin config truth) and ``plugins/`` (the
Kong plugin modules) at its top level; the wheel ships them inside the package as
``aigw/schemas/`` and ``aigw/plugins/``, so an installed gateway reads nothing from a checkout
(``aigw.schema.schemas_dir``; ``aigw-plugin-info -d <site-packages>/aigw/plugins``). pyproject.toml
alone cannot map a sub-package to another directory while finding the others.
"""
from setuptools import find_namespace_packages, setup

setup(
    # namespace discovery: data directories such as aigw/data/ are packages too (package data)
    packages=find_namespace_packages(include=["aigw", "aigw.*"], exclude=["*.__pycache__"])
    + ["aigw.schemas", "aigw.plugins"],
    package_dir={"aigw.schemas": "schemas", "aigw.plugins": "plugins"},
)
