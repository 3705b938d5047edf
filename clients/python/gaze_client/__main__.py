"""python -m gaze_client: the command line."""
import sys

from gaze_client.cli import main

sys.exit(main())
