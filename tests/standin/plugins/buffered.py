"""Test plugin with a response handler: its route is proxied buffered."""
version = "0.1.0"
priority = 600

Schema = ()


class Plugin:
    def __init__(self, config):
        self.config = config

    def response(self, kong):
        try:
            body = kong.service.response.get_raw_body()
            kong.response.set_header("X-Body-Len", str(len(body)))
            kong.response.set_header("X-Upstream-Status", str(kong.service.response.get_status()))
        except Exception as exc:
            kong.log.err("buffered failed: " + str(exc))
