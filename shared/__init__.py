"""GAZE's common package: config, contracts (events, RPC errors, schemas) and I/O helpers."""
import warnings

# nameko 2.x runs on eventlet, which now warns on import that it is in maintenance mode. We know (see
# the README's "Why eventlet" note); the warning would otherwise open every log of every process.
warnings.filterwarnings("ignore", message=r"(?s).*Eventlet is deprecated")
