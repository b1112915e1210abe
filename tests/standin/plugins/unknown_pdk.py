"""Test plugin: calls a PDK method the stand-in does not implement."""
import contextlib

version = "0.1.0"
priority = 700

Schema = ()


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        with contextlib.suppress(Exception):
            kong.request.get_something_nobody_has()
