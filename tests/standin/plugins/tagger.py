"""Test plugin (priority 2000): appends its tag to X-Seen-By and marks kong.ctx.shared."""
version = "0.1.0"
priority = 2000

Schema = ({"tag": {"type": "string", "required": True}},)


class Plugin:
    def __init__(self, config):
        self.config = config

    def access(self, kong):
        try:
            seen = kong.request.get_header("X-Seen-By")
            tag = self.config["tag"]
            kong.service.request.set_header("X-Seen-By", seen + "," + tag if seen else tag)
            kong.ctx.shared.set("tagged", tag)
        except Exception as exc:
            kong.log.err("tagger failed: " + str(exc))
