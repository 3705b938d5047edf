"""A ComfyUI-protocol test server (see server.py)."""
from tests.comfyui_fake.server import FakeComfyUI, Script, free_port, make_png

__all__ = ["FakeComfyUI", "Script", "free_port", "make_png"]
