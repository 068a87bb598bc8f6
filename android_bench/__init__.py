"""android_bench: time TFLite models on Android phones over adb, and on this machine.

Standalone: imports neither torch, tensorflow nor mobiledepth.
"""

__version__ = "0.1.0"
