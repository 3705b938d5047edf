"""`gaze-client` (clients/python/gaze_client/cli.py) against the fake GAZE API of tests/gaze_fake.py: what
each command prints, --json, the live progress lines, and the exit status (0 done, 1 a job failed or was
cancelled, 2 usage or server error, 3 timeout)."""
import io
import json

import pytest

from gaze_client import cli
from gaze_client._progress import Display, describe
from gaze_client.models import Job
from tests.gaze_fake import FakeGaze, answer, job_doc


@pytest.fixture
def fake(monkeypatch):
    fake = FakeGaze()
    monkeypatch.setattr(cli, "Client", lambda url, key: fake.client())
    return fake


def run(capsys, *argv):
    status = cli.main(list(argv))
    out, err = capsys.readouterr()
    return status, out, err


def test_presets_as_text_and_json(fake, capsys):
    assert run(capsys, "presets") == (0, "example_01\tExample Preset\n", "")
    status, out, _ = run(capsys, "presets", "--json")
    assert status == 0 and json.loads(out)[0]["slug"] == "example_01"
    status, out, _ = run(capsys, "--json", "presets")       # before the command too
    assert status == 0 and json.loads(out)[0]["slug"] == "example_01"


def test_generate_prints_the_job_ids_and_sends_the_options(fake, capsys):
    status, out, _ = run(capsys, "generate", "example_01", "-n", "2", "--seed", "7", "--extra-positive", "smiling")
    assert status == 0 and out.split() == list(fake.jobs)
    [post] = [r for r in fake.requests if r.method == "POST"]
    assert json.loads(post.content) == {"count": 2, "seed": 7, "extra_positive": "smiling"}


def test_generate_wait_out_downloads_and_reports_progress_as_plain_lines(fake, capsys, tmp_path):
    status, out, err = run(capsys, "generate", "example_01", "-n", "2", "--out", str(tmp_path), "--json")
    assert status == 0
    jobs = json.loads(out)
    assert [job["status"] for job in jobs] == ["done", "done"]
    assert sorted(job["file"] for job in jobs) == sorted(str(p) for p in tmp_path.iterdir())
    lines = err.splitlines()     # not a terminal: one plain line per change, no escape codes
    assert "\x1b" not in err
    for job in jobs:
        mine = [line.split()[1] for line in lines if line.startswith(job["id"][:8])]
        assert mine == ["pending", "processing", "done"]


@pytest.mark.parametrize("script, expected", [
    ([("pending", None), ("failed", None)], 1),
    ([("pending", None), ("cancelled", None)], 1),
])
def test_a_failed_or_cancelled_job_exits_1(fake, capsys, script, expected):
    fake.script = script
    status, out, _ = run(capsys, "generate", "example_01", "--wait")
    assert status == expected
    assert script[-1][0] in out


def test_a_wait_that_times_out_exits_3(fake, capsys):
    fake.silent_streams = True
    status, _, err = run(capsys, "generate", "example_01", "--wait", "--timeout", "0.2")
    assert status == 3 and "not ended after 0.2 s" in err


@pytest.mark.parametrize("argv", [["generate"], ["generate", "example_01", "-n", "0"], ["frobnicate"],
                                  ["jobs", "--status", "bogus"]])
def test_usage_errors_exit_2(fake, capsys, argv):
    with pytest.raises(SystemExit) as caught:
        cli.main(argv)
    assert caught.value.code == 2


def test_server_errors_exit_2_naming_the_field(fake, capsys):
    status, _, err = run(capsys, "generate", "no_such_preset")
    assert status == 2 and "404: no such preset" in err
    fake.failures = [answer(400, {"error": "count: must be at most 20", "field": "count"})]
    status, _, err = run(capsys, "generate", "example_01", "-n", "21")
    assert status == 2 and "(count)" in err


def test_job_jobs_cancel_and_watch(fake, capsys):
    done = fake.add_job(("done", 20))
    running = fake.add_job(("processing", 3), ("done", 20))
    status, out, _ = run(capsys, "job", done)
    assert status == 0 and "done" in out and "seed:  7" in out
    status, out, _ = run(capsys, "jobs", "--status", "done", "--json")
    assert status == 0 and [job["id"] for job in json.loads(out)] == [done]
    status, out, _ = run(capsys, "jobs", "--limit", "1")
    assert status == 0 and len(out.splitlines()) == 1
    status, out, _ = run(capsys, "watch", running, "--json")
    assert status == 0 and [json.loads(line)["status"] for line in out.splitlines()] == ["processing", "done"]
    assert run(capsys, "cancel", fake.add_job(("pending", None)))[0] == 0
    status, _, err = run(capsys, "cancel", done)
    assert status == 1 and "already done" in err


def test_the_terminal_display_redraws_one_line_per_job():
    stream = io.StringIO()
    ids = ["a" * 36, "b" * 36]
    display = Display(ids, stream=stream, tty=True)
    display.update(Job.model_validate(job_doc(ids[0], "pending", queue_position=3)))
    display.update(Job.model_validate(job_doc(ids[1], "processing", step=10)))
    text = stream.getvalue()
    assert "3 ahead in line" in text and "[##########..........] step 10/20" in text
    assert text.count("\x1b[2A") == 1       # the second draw went back over the two lines of the first


def test_plain_lines_only_for_milestones():
    stream = io.StringIO()
    display = Display(["c" * 36], stream=stream, tty=False)
    for step in range(1, 21):
        display.update(Job.model_validate(job_doc("c" * 36, "processing", step=step)))
    assert len(stream.getvalue().splitlines()) == 5    # 0, 1/4, 2/4, 3/4, all of the steps
    assert describe(Job.model_validate(job_doc("c" * 36, "pending", queue_position=0))).endswith("next in line")
