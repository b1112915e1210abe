"""Test plugin: sets ctx.shared in access and writes kong.log.serialize() to a file in log."""
import json

version = "0.1.0"
priority = 500

Schema = ({"path": {"type": "string", "required": True}},)


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        try:
            kong.ctx.shared.set("logger_mark", "set-in-access")
        except Exception as exc:
            kong.log.err(str(exc))

    def log(self, kong):
        try:
            entry = json.loads(kong.log.serialize())
            entry["mark"] = kong.ctx.shared.get("logger_mark")
            entry["status_seen"] = kong.response.get_status()
            with open(self.config["path"], "a") as f:
                f.write(json.dumps(entry) + "\n")
        except Exception as exc:
            kong.log.err(str(exc))
