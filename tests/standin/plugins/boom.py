"""Test plugin: its access handler raises (kong-pdk 0.36 then never answers the event)."""
version = "0.1.0"
priority = 700

Schema = ()


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        raise RuntimeError("boom")
