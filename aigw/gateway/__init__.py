"""One stage per feature (aigw/pipeline.py), beside the feature's core: ai-redact
(``redact.RedactStage``), ai-router (``router.RouterStage``), ai-cache
(``cache.CacheStage``), ai-tokens (``tokens.TokensStage``), ai-cost (``cost.CostStage``);
and the client APIs' writers (``egress``). No PDK here: ``plugins/*.py`` only move data
between Kong's PDK and these stages.
"""
