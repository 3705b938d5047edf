"""Run the fake ComfyUI by hand, e.g. to drive a local GAZE stack without a GPU:

    python -m tests.comfyui_fake --port 8188 --step-delay 0.2
    GAZE_BACKEND=comfyui GAZE_COMFYUI_URL=http://127.0.0.1:8188 gaze up
"""
import argparse
import logging
import time

from tests.comfyui_fake.server import FakeComfyUI, Script


def main():
    parser = argparse.ArgumentParser(prog="python -m tests.comfyui_fake", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8188)
    parser.add_argument("--step-delay", type=float, default=0.05, help="seconds per sampler step")
    parser.add_argument("--checkpoint", action="append", help="an installed checkpoint (repeatable)")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    fake = FakeComfyUI(args.host, args.port, checkpoints=args.checkpoint)
    fake.script = Script(step_delay=args.step_delay)
    fake.start()
    print(f"fake ComfyUI listening on {fake.url} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        fake.stop()


if __name__ == "__main__":
    main()
