"""docs/client.md, run as written: every ```python and ```bash block, against the session's stack (the one
tests/e2e/test_guide.py walks the guide on), with GAZE_URL and GAZE_API_KEY set as the page says."""
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.e2e

DOC = Path(__file__).resolve().parents[2] / "docs" / "client.md"
BIN = Path(sys.executable).parent


def blocks(language):
    return re.findall(rf"```{language}\n(.*?)```", DOC.read_text(), flags=re.S)


def run(stack, tmp_path, language, index, timeout=180):
    env = dict(os.environ, GAZE_URL=stack.url, GAZE_API_KEY=stack.key, PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    command = [sys.executable, "-c"] if language == "python" else ["bash", "-euc"]
    done = subprocess.run([*command, blocks(language)[index]], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_page_has_the_guides_four_examples_each_in_python_and_on_the_command_line():
    text = DOC.read_text()
    for title in ("Generate a single image and wait for it", "Generate 3 images with extra prompts",
                  "Reproduce a specific image", "Python example"):
        assert f"\n### {title}\n" in text
    assert len(blocks("python")) == 7 and len(blocks("bash")) == 4


def test_a_single_image_and_wait(stack, tmp_path):
    out = run(stack, tmp_path, "python", 0)
    assert "Status: done" in out
    job = json.loads(out[out.index("{"):])
    assert job["result"]["image_url"].startswith("/static/uploads/")
    [cli_job] = json.loads(run(stack, tmp_path, "bash", 0))
    assert cli_job["status"] == "done"


def test_three_images_with_extra_prompts(stack, tmp_path):
    lines = run(stack, tmp_path, "python", 1).splitlines()
    assert len(lines) == 3 and all(line.split()[1] in ("pending", "processing", "done") for line in lines)
    for job_id in [line.split()[0] for line in lines] + run(stack, tmp_path, "bash", 1).split():
        job = stack.wait_job(job_id)
        assert job["status"] == "done"
        image = Image.open(stack.media_root / job["result"]["relative_path"])
        assert image.text["prompt"].endswith(", smiling, outdoors") and image.text["negative_prompt"].endswith(", blurry")


def test_reproduce_a_specific_image(stack, tmp_path):
    saved = run(stack, tmp_path, "python", 2).strip().removeprefix("Saved ")
    from_cli = run(stack, tmp_path, "bash", 2).strip()
    for path in (saved, from_cli):
        assert Image.open(tmp_path / path).text["seed"] == "927640517599332"
    assert Image.open(tmp_path / saved).tobytes() == Image.open(tmp_path / from_cli).tobytes()


def test_the_python_example(stack, tmp_path):
    out = run(stack, tmp_path, "python", 3)
    assert "Available presets: [" in out and "'Example Preset'" in out
    assert re.search(r"^Queued job: [0-9a-f-]{36}$", out, flags=re.M)
    assert out.splitlines()[-3] == "Status: done"
    assert re.search(rf"^Image: {re.escape(stack.url)}/static/uploads/\S+\.png$", out, flags=re.M)
    assert re.search(r"^Seed: \d+$", out, flags=re.M)
    assert "example_01\tExample Preset" in run(stack, tmp_path, "bash", 3)


def test_the_other_examples(stack, tmp_path):
    downloads = run(stack, tmp_path, "python", 4).split()
    assert len(downloads) == 2 and all(Image.open(tmp_path / path).size == (512, 512) for path in downloads)
    states = run(stack, tmp_path, "python", 5).splitlines()
    assert states[-2].startswith("done ") and len(states[-1].split()) == 2
    assert run(stack, tmp_path, "python", 6).startswith("count: ")
