"""Test plugin: calls a PDK method the stand-in does not implement."""
version = "0.1.0"
priority = 700

Schema = ()


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        try:
            kong.request.get_something_nobody_has()
        except Exception:  # noqa: BLE001
            pass
