"""The built-in model organism: a tiny Qwen2.5-VL trained here on synthetic tasks."""
