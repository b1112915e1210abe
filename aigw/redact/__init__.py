"""PII and secret redaction core (no I/O, no PDK)."""
from .detect import BUILTIN_ENTITIES, SECRET_ENTITIES, CustomPattern, Detector, Found
from .engine import RedactConfig, ScanResult, ScanTooLarge, hash_value, mask_value, scan_request
from .restore import StreamRestorer, restore_text

__all__ = [
    "BUILTIN_ENTITIES", "SECRET_ENTITIES", "CustomPattern", "Detector", "Found",
    "RedactConfig", "ScanResult", "ScanTooLarge", "hash_value", "mask_value", "scan_request",
    "StreamRestorer", "restore_text",
]
