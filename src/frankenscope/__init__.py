"""frankenscope: what did a post-training stage change inside a vision-language model, and where?"""

__version__ = "0.1.0"
