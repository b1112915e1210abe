"""Test plugin: echoes PDK data into response headers or upstream headers."""
import json

version = "0.1.0"
priority = 900

Schema = (
    {"mode": {"type": "string", "default": "upstream", "one_of": ["upstream", "exit"]}},
    {"tag": {"type": "string", "default": "echo"}},
    {"secret": {"type": "string", "referenceable": True}},
    {"limits": {"type": "record", "fields": [
        {"max": {"type": "integer", "default": 10, "between": [1, 100]}},
    ]}},
)


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        try:
            cfg = self.config
            consumer = kong.client.get_consumer()
            route = kong.router.get_route()
            seen = kong.request.get_header("x-seen-by") or ""
            order = seen + ("," if seen else "") + cfg["tag"]
            kong.service.request.set_header("X-Seen-By", order)
            if cfg["mode"] == "exit":
                info = {
                    "tag": cfg["tag"],
                    "secret": cfg.get("secret"),
                    "max": (cfg.get("limits") or {}).get("max"),
                    "consumer": consumer and consumer.get("username"),
                    "route": route and route.get("name"),
                    "path": kong.request.get_path(),
                    "query": kong.request.get_query(),
                    "method": kong.request.get_method(),
                    "body": kong.request.get_raw_body().decode("utf-8", "replace"),
                    "seen": order,
                    "headers": kong.request.get_headers(),
                }
                kong.response.exit(299, json.dumps(info), {"X-Echo": cfg["tag"], "Content-Type": "application/json"})
        except Exception as exc:  # keep the plugin server answering
            kong.log.err("echo failed: " + type(exc).__name__ + ": " + str(exc))
