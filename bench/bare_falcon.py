"""The machine's ceiling for bench/gateway_load.py: a bare Falcon app that answers every GET with one
constant JSON document (the API guide's example job, about the size of a real job-status answer).

No middleware, no database, no RPC: whatever gunicorn + Falcon + the load generator can do on this
machine. bench/gateway_load.py serves it with the gateway's own gunicorn configuration file, so workers,
threads, worker class, keep-alive and the access log are exactly the gateway's:

    GAZE_BIND=127.0.0.1:5799 GAZE_RUN_DIR=/tmp/bare-run \\
        .venv/bin/gunicorn --config python:services.gateway.gunicorn_conf bench.bare_falcon:app
"""
import falcon

CONSTANT = {
    "id": "783f0268-ba85-4426-8ca2-6393c844c887",
    "label": "Preset: Example Preset – preview",
    "status": "done",
    "error": None,
    "result": {
        "image_url": "/static/uploads/presets/example_01/gen_1773601346.png",
        "relative_path": "presets/example_01/gen_1773601346.png",
        "seed": 927640517599332,
    },
}


class ConstantResource:
    def on_get(self, req, resp, **_):
        resp.media = CONSTANT


app = falcon.App()
app.add_route("/ceiling", ConstantResource())
