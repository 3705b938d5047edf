"""A ComfyUI-protocol test server: the subset of ComfyUI's HTTP and websocket API that GAZE uses, with
ComfyUI's behaviour (message order, who gets which event, validation answers) and no model behind it.

    fake = FakeComfyUI().start()          # aiohttp on 127.0.0.1:<free port>, in a real OS thread
    fake.script = Script(steps=3, fail_at="KSampler")   # how the next prompts behave
    ... fake.url, fake.prompts, fake.interrupts, fake.deletes ...
    fake.stop()

A prompt may also carry its own overrides in `extra_data: {"fake_script": {...}}` (e.g. a foreign prompt
that hangs while the one under test waits). Run it by hand with `python -m tests.comfyui_fake`.

Behaviour reproduced from ComfyUI's server.py / execution.py / main.py:
- POST /prompt validates: unknown node class → 400 `invalid_prompt` (no node_errors); a graph without
  an output node → 400 `prompt_no_outputs`; bad inputs → 400 `prompt_outputs_failed_validation` with
  per-node `node_errors` (`required_input_missing`, `value_not_in_list` with extra_info.input_name,
  `invalid_input_type`);
- events go only to the websocket whose clientId is the prompt's client_id (`status` to everyone):
  status, execution_start, execution_cached, executing per node, progress per step, executed,
  execution_success, (history written), status, executing {node: null};
  on an error: execution_error, (history written), status — and no executing-null;
  on an interrupt: execution_interrupted, (history), status, executing-null;
- a client-chosen prompt_id must be a canonical lowercase UUID (400 `invalid_prompt_id` otherwise);
- /history/<id> is {} until the prompt has finished; POST /interrupt with a prompt_id touches only that
  prompt; POST /queue {"delete": [...]} removes waiting prompts; every route also answers under /api;
- a CheckpointLoaderSimple is answered from the cache (listed in execution_cached, not executed) when the
  prompt that ran before it, whoever sent it, loaded or reused the same checkpoint, and executed otherwise (a
  load): ComfyUI's default cache keeps the outputs of the prompt it ran last (it drops, as each prompt
  starts, whatever that prompt does not use). `fake.cached_checkpoints` is what it holds; a restart
  forgets it.
"""
from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import socket
import sys
import time
import uuid
from dataclasses import dataclass, field

from aiohttp import web, WSMsgType
from PIL import Image
from PIL.PngImagePlugin import PngInfo

if "eventlet" in sys.modules:  # in an eventlet-patched process (the test suite) it needs a real OS thread
    from eventlet.patcher import original as _original

    _threading = _original("threading")
else:
    import threading as _threading

log = logging.getLogger(__name__)

DEFAULT_CHECKPOINTS = ["Illustrious/model.safetensors", "SDXL/sd_xl_base_1.0.safetensors"]
SAMPLERS = ["euler", "euler_ancestral", "heun", "dpm_2", "dpmpp_2m", "dpmpp_2m_sde", "dpmpp_sde", "ddim",
            "uni_pc"]
SCHEDULERS = ["normal", "karras", "exponential", "sgm_uniform", "simple", "ddim_uniform", "beta"]


@dataclass
class Script:
    """How prompts behave. Tests replace `fake.script`; a prompt may override fields in
    extra_data["fake_script"]."""
    steps: int | None = None            # sampler steps to report (None: the KSampler's own `steps`)
    step_delay: float = 0.002           # seconds per sampler step
    load_delay: float = 0.0             # seconds per checkpoint loader that executes (a load; 0: node_delay)
    node_delay: float = 0.0             # seconds per other node
    cached: list = field(default_factory=list)   # node ids reported in execution_cached (and skipped)
    fail_at: str | None = None          # node id or class_type whose execution raises
    exception_type: str = "RuntimeError"
    exception_message: str = "fake failure"
    drop_ws_after_step: int | None = None   # close the client's websocket after this progress step
    refuse_ws_after_drop: bool = True       # and refuse that client's reconnects (HTTP 503)
    hang: bool = False                  # the sampler never finishes (until interrupted)
    history_delay: float = 0.0          # between execution_success and the history entry
    accept: bool = True                 # False: POST /prompt answers HTTP 500


def _node_specs(checkpoints):
    """class_type -> {"required": {name: spec}, "output": [...], "output_node": bool}, in object_info form."""
    link = lambda kind: [kind]  # noqa: E731
    return {
        "CheckpointLoaderSimple": {"required": {"ckpt_name": [checkpoints, {"tooltip": "The name of the checkpoint (model) to load."}]},
                                   "output": ["MODEL", "CLIP", "VAE"]},
        "CLIPTextEncode": {"required": {"text": ["STRING", {"multiline": True, "dynamicPrompts": True}],
                                        "clip": link("CLIP")}, "output": ["CONDITIONING"]},
        "EmptyLatentImage": {"required": {"width": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}],
                                          "height": ["INT", {"default": 512, "min": 16, "max": 16384, "step": 8}],
                                          "batch_size": ["INT", {"default": 1, "min": 1, "max": 4096}]},
                             "output": ["LATENT"]},
        "KSampler": {"required": {"model": link("MODEL"),
                                  "seed": ["INT", {"default": 0, "min": 0, "max": 0xffffffffffffffff}],
                                  "steps": ["INT", {"default": 20, "min": 1, "max": 10000}],
                                  "cfg": ["FLOAT", {"default": 8.0, "min": 0.0, "max": 100.0}],
                                  "sampler_name": [SAMPLERS, {}], "scheduler": [SCHEDULERS, {}],
                                  "positive": link("CONDITIONING"), "negative": link("CONDITIONING"),
                                  "latent_image": link("LATENT"),
                                  "denoise": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 1.0}]},
                     "output": ["LATENT"]},
        "VAEDecode": {"required": {"samples": link("LATENT"), "vae": link("VAE")}, "output": ["IMAGE"]},
        "SaveImage": {"required": {"images": link("IMAGE"), "filename_prefix": ["STRING", {"default": "ComfyUI"}]},
                      "output": [], "output_node": True},
        "PreviewImage": {"required": {"images": link("IMAGE")}, "output": [], "output_node": True},
    }


def _object_info(class_type, spec):
    return {"input": {"required": spec["required"]}, "input_order": {"required": list(spec["required"])},
            "output": spec["output"], "output_is_list": [False] * len(spec["output"]),
            "output_name": spec["output"], "name": class_type, "display_name": class_type, "description": "",
            "python_module": "nodes", "category": "fake", "output_node": spec.get("output_node", False)}


def make_png(width, height, seed, graph):
    """A real PNG like SaveImage writes: RGB pixels from the seed, the graph in a `prompt` text chunk."""
    horizontal = Image.linear_gradient("L").rotate(90).resize((width, height))
    vertical = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (horizontal, vertical, Image.new("L", (width, height), seed % 251)))
    info = PngInfo()
    info.add_text("prompt", json.dumps(graph))
    info.add_text("workflow", json.dumps({"nodes": [], "links": []}))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", pnginfo=info, compress_level=1)
    return buffer.getvalue()


@dataclass
class _Prompt:
    number: int
    prompt_id: str
    graph: dict
    extra_data: dict
    outputs_to_execute: list
    script: Script
    interrupted: bool = False
    node: str | None = None             # the node executing now (told to a reconnecting client)
    history_status: str = "error"       # how it ended: success, error or interrupted

    @property
    def client_id(self):
        return self.extra_data.get("client_id")

    def queue_item(self):
        return [self.number, self.prompt_id, self.graph, self.extra_data, self.outputs_to_execute]


class FakeComfyUI:
    def __init__(self, host="127.0.0.1", port=0, checkpoints=None):
        self.host, self.port = host, port
        self.checkpoints = list(DEFAULT_CHECKPOINTS if checkpoints is None else checkpoints)
        self.script = Script()
        self.version = "0.8.0-fake"
        # what happened, for the tests to read (appended from the server thread)
        self.prompts: list[dict] = []       # every POST /prompt body, accepted or not
        self.interrupts: list[dict] = []    # every POST /interrupt body
        self.deletes: list[list] = []       # every POST /queue "delete" list
        self.ws_connects: list[str] = []    # clientId of every websocket accepted
        self.ws_refused: list[str] = []
        self.sent: list[tuple] = []         # (client_id or None, type, data) of every event sent
        self.history: dict = {}
        self.files: dict = {}               # (subfolder, filename, type) -> bytes
        self.cached_checkpoints: set = set()    # the checkpoints whose loader outputs the cache holds
        self._pending: list[_Prompt] = []
        self._running: _Prompt | None = None
        self._sockets: dict[str, web.WebSocketResponse] = {}
        self._refuse: set[str] = set()
        self._number = 0
        self._counter = 0
        self._loop = None
        self._thread = None
        self._runner = None
        self._wake = None
        self._ready = _threading.Event()
        self._error = None

    # ---- lifecycle (called from the test's thread)

    @property
    def url(self):
        return f"http://{self.host}:{self.port}"

    def start(self):
        self._thread = _threading.Thread(target=self._serve, name="fake-comfyui", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fake ComfyUI did not start")
        if self._error:
            raise self._error
        return self

    def stop(self):
        if self._loop is None:
            return
        try:
            self.call(self._shutdown)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(5)
            self._loop = None

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc):
        self.stop()

    def call(self, coroutine_function, *args, timeout=5.0):
        """Run a coroutine on the server's loop from the test's thread and wait for it. (Not through
        asyncio.run_coroutine_threadsafe: its future wakes the caller with a lock that eventlet has
        made green, which cannot be released from the server's thread.)"""
        done, box = _threading.Event(), {}

        async def run():
            try:
                box["result"] = await coroutine_function(*args)
            except BaseException as exc:  # noqa: B902 — handed to the caller
                box["error"] = exc
            finally:
                done.set()

        self._loop.call_soon_threadsafe(lambda: asyncio.ensure_future(run()))
        if not done.wait(timeout):
            raise TimeoutError(f"the fake ComfyUI did not finish {coroutine_function.__name__} in {timeout}s")
        if "error" in box:
            raise box["error"]
        return box.get("result")

    def restart(self):
        """Forget everything, as a restarted ComfyUI does: the running prompt, the queue, the history and
        every websocket."""
        return self.call(self._restart)

    async def _restart(self):
        self._worker.cancel()
        self._running = None
        self._pending.clear()
        self.history.clear()
        self.cached_checkpoints.clear()
        await self._close_sockets()
        self._worker = asyncio.ensure_future(self._work())

    def drop_websockets(self):
        """Close every open websocket (as a restarting proxy would)."""
        return self.call(self._close_sockets)

    @property
    def running_id(self):
        return self._running.prompt_id if self._running else None

    @property
    def pending_ids(self):
        return [p.prompt_id for p in self._pending]

    def events_for(self, prompt_id):
        return [(kind, data) for _, kind, data in self.sent if data.get("prompt_id") == prompt_id]

    # ---- the server thread

    def _serve(self):
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._setup())
        except Exception as exc:  # e.g. the port is taken
            self._error = exc
            self._ready.set()
            loop.close()
            return
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _setup(self):
        self._wake = asyncio.Event()
        app = web.Application(client_max_size=64 * 1024 * 1024)
        routes = [
            ("POST", "/prompt", self.post_prompt), ("GET", "/prompt", self.get_prompt),
            ("GET", "/ws", self.websocket),
            ("GET", "/history", self.get_history_all), ("GET", "/history/{prompt_id}", self.get_history),
            ("GET", "/view", self.view), ("GET", "/object_info", self.object_info_all),
            ("GET", "/object_info/{node_class}", self.object_info),
            ("POST", "/interrupt", self.interrupt), ("GET", "/queue", self.get_queue),
            ("POST", "/queue", self.post_queue), ("GET", "/system_stats", self.system_stats),
        ]
        for method, path, handler in routes:
            app.router.add_route(method, path, handler)
            app.router.add_route(method, "/api" + path, handler)
        self._runner = web.AppRunner(app, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self._worker = asyncio.ensure_future(self._work())

    async def _shutdown(self):
        self._worker.cancel()
        await self._close_sockets()
        await self._runner.cleanup()

    async def _close_sockets(self):
        for sid, ws in list(self._sockets.items()):
            await ws.close()
            self._sockets.pop(sid, None)

    # ---- sending

    async def send(self, kind, data, client_id):
        """To that client's socket only; to every socket when client_id is None (ComfyUI's send_sync)."""
        self.sent.append((client_id, kind, data))
        targets = list(self._sockets.values()) if client_id is None else [self._sockets.get(client_id)]
        for ws in targets:
            if ws is not None and not ws.closed:
                try:
                    await ws.send_str(json.dumps({"type": kind, "data": data}))
                except (ConnectionError, RuntimeError):
                    pass

    async def send_status(self):
        remaining = len(self._pending) + (1 if self._running else 0)
        await self.send("status", {"status": {"exec_info": {"queue_remaining": remaining}}}, None)

    # ---- routes

    async def post_prompt(self, request):
        try:
            body = await request.json()
        except ValueError:
            return web.json_response({"error": "invalid json", "node_errors": []}, status=400)
        self.prompts.append(body)
        if not self.script.accept:
            return web.Response(status=500, text="500 Internal Server Error: the fake was told to fail")
        graph = body.get("prompt")
        if not isinstance(graph, dict):
            return web.json_response({"error": {"type": "no_prompt", "message": "No prompt provided",
                                                "details": "", "extra_info": {}}, "node_errors": {}}, status=400)
        if body.get("prompt_id") is not None and not _canonical_uuid(body["prompt_id"]):
            return web.json_response({"error": {
                "type": "invalid_prompt_id", "message": "prompt_id must be a valid UUID",
                "details": "prompt_id must be a UUID string in canonical lowercase hyphenated form; omit it to "
                           "let the server generate one", "extra_info": {}}, "node_errors": {}}, status=400)
        ok, error, outputs, node_errors = self._validate(graph)
        if not ok:
            return web.json_response({"error": error, "node_errors": node_errors}, status=400)
        prompt_id = str(body.get("prompt_id") or uuid.uuid4())
        extra = dict(body.get("extra_data") or {})
        if "client_id" in body:
            extra["client_id"] = body["client_id"]
        overrides = extra.pop("fake_script", None) or {}
        script = dataclasses.replace(self.script, **overrides)
        self._number += 1
        self._pending.append(_Prompt(self._number, prompt_id, graph, extra, outputs, script))
        self._wake.set()
        return web.json_response({"prompt_id": prompt_id, "number": self._number, "node_errors": {}})

    async def get_prompt(self, request):
        remaining = len(self._pending) + (1 if self._running else 0)
        return web.json_response({"exec_info": {"queue_remaining": remaining}})

    async def websocket(self, request):
        sid = request.query.get("clientId") or uuid.uuid4().hex
        if sid in self._refuse:
            self.ws_refused.append(sid)
            return web.Response(status=503, text="refused by the test script")
        ws = web.WebSocketResponse()
        await ws.prepare(request)
        old = self._sockets.pop(sid, None)
        if old is not None:
            await old.close()
        self._sockets[sid] = ws
        self.ws_connects.append(sid)
        remaining = len(self._pending) + (1 if self._running else 0)
        await ws.send_str(json.dumps({"type": "status", "data": {
            "status": {"exec_info": {"queue_remaining": remaining}}, "sid": sid}}))
        # ComfyUI tells a reconnecting client which node runs now
        if self._running is not None and self._running.client_id == sid and self._running.node:
            await ws.send_str(json.dumps({"type": "executing", "data": {
                "node": self._running.node, "display_node": self._running.node,
                "prompt_id": self._running.prompt_id}}))
        try:
            async for message in ws:
                if message.type == WSMsgType.ERROR:
                    break
        finally:
            if self._sockets.get(sid) is ws:
                self._sockets.pop(sid, None)
        return ws

    async def get_history(self, request):
        prompt_id = request.match_info["prompt_id"]
        entry = self.history.get(prompt_id)
        return web.json_response({prompt_id: entry} if entry is not None else {})

    async def get_history_all(self, request):
        return web.json_response(self.history)

    async def view(self, request):
        key = (request.query.get("subfolder", ""), request.query.get("filename", ""),
               request.query.get("type", "output"))
        data = self.files.get(key)
        if data is None:
            return web.Response(status=404)
        return web.Response(body=data, content_type="image/png")

    async def object_info(self, request):
        class_type = request.match_info["node_class"]
        spec = _node_specs(self.checkpoints).get(class_type)
        return web.json_response({class_type: _object_info(class_type, spec)} if spec else {})

    async def object_info_all(self, request):
        return web.json_response({name: _object_info(name, spec)
                                  for name, spec in _node_specs(self.checkpoints).items()})

    async def interrupt(self, request):
        try:
            body = await request.json()
        except ValueError:
            body = {}
        self.interrupts.append(body)
        prompt_id = body.get("prompt_id") if isinstance(body, dict) else None
        running = self._running
        if running is not None and (prompt_id is None or prompt_id == running.prompt_id):
            running.interrupted = True
        return web.Response(status=200)

    async def get_queue(self, request):
        return web.json_response({"queue_running": [self._running.queue_item()] if self._running else [],
                                  "queue_pending": [p.queue_item() for p in self._pending]})

    async def post_queue(self, request):
        body = await request.json()
        if body.get("clear"):
            self._pending.clear()
        if "delete" in body:
            self.deletes.append(list(body["delete"]))
            doomed = {str(x) for x in body["delete"]}
            self._pending[:] = [p for p in self._pending if p.prompt_id not in doomed]
        return web.Response(status=200)

    async def system_stats(self, request):
        return web.json_response({
            "system": {"os": "posix", "ram_total": 16 * 2**30, "ram_free": 8 * 2**30,
                       "comfyui_version": self.version, "python_version": "3.11", "pytorch_version": "none",
                       "embedded_python": False, "argv": ["main.py", "--cpu"]},
            "devices": [{"name": "cpu", "type": "cpu", "index": None, "vram_total": 16 * 2**30,
                         "vram_free": 8 * 2**30, "torch_vram_total": 16 * 2**30, "torch_vram_free": 8 * 2**30}]})

    # ---- validation (execution.validate_prompt, trimmed)

    def _validate(self, graph):
        specs = _node_specs(self.checkpoints)
        for node_id, node in graph.items():
            if not isinstance(node, dict) or "class_type" not in node:
                return False, {"type": "invalid_prompt",
                               "message": "Cannot execute because a node is missing the class_type property.",
                               "details": f"Node ID '#{node_id}'", "extra_info": {}}, [], {}
            if node["class_type"] not in specs:
                return False, {"type": "invalid_prompt",
                               "message": f"Cannot execute because node {node['class_type']} does not exist.",
                               "details": f"Node ID '#{node_id}'", "extra_info": {}}, [], {}
        outputs = [node_id for node_id, node in graph.items() if specs[node["class_type"]].get("output_node")]
        if not outputs:
            return False, {"type": "prompt_no_outputs", "message": "Prompt has no outputs", "details": "",
                           "extra_info": {}}, [], {}
        node_errors = {}
        for node_id, node in graph.items():
            errors = []
            inputs = node.get("inputs") or {}
            for name, spec in specs[node["class_type"]]["required"].items():
                if name not in inputs:
                    errors.append({"type": "required_input_missing", "message": "Required input is missing",
                                   "details": name, "extra_info": {"input_name": name}})
                    continue
                value = inputs[name]
                if isinstance(value, list):
                    if len(value) != 2 or str(value[0]) not in graph:
                        errors.append({"type": "bad_linked_input", "message": "Bad linked input, must be a length-2 list of [string, int]",
                                       "details": f"{name}", "extra_info": {"input_name": name, "received_value": value}})
                    continue
                kind = spec[0]
                if isinstance(kind, list):
                    if value not in kind:
                        errors.append({"type": "value_not_in_list", "message": "Value not in list",
                                       "details": f"{name}: '{value}' not in {kind}",
                                       "extra_info": {"input_name": name, "input_config": spec, "received_value": value}})
                elif kind in ("INT", "FLOAT"):
                    if isinstance(value, bool) or not isinstance(value, (int, float)):
                        errors.append({"type": "invalid_input_type",
                                       "message": f"Failed to convert an input value to a {kind} value",
                                       "details": f"{name}, {value}",
                                       "extra_info": {"input_name": name, "input_config": spec, "received_value": value}})
                    elif "max" in spec[1] and value > spec[1]["max"]:
                        errors.append({"type": "value_bigger_than_max",
                                       "message": f"Value {value} bigger than max of {spec[1]['max']}",
                                       "details": name, "extra_info": {"input_name": name, "received_value": value}})
                    elif "min" in spec[1] and value < spec[1]["min"]:
                        errors.append({"type": "value_smaller_than_min",
                                       "message": f"Value {value} smaller than min of {spec[1]['min']}",
                                       "details": name, "extra_info": {"input_name": name, "received_value": value}})
                elif kind == "STRING" and not isinstance(value, str):
                    errors.append({"type": "invalid_input_type", "message": "Failed to convert an input value to a STRING value",
                                   "details": f"{name}, {value}", "extra_info": {"input_name": name, "received_value": value}})
            if errors:
                node_errors[node_id] = {"errors": errors, "dependent_outputs": outputs,
                                        "class_type": node["class_type"]}
        if node_errors:
            return False, {"type": "prompt_outputs_failed_validation", "message": "Prompt outputs failed validation",
                           "details": "", "extra_info": {}}, outputs, node_errors
        return True, None, outputs, {}

    # ---- execution (main.prompt_worker + execution.PromptExecutor, simulated)

    async def _work(self):
        while True:
            if not self._pending:
                self._wake.clear()
                await self._wake.wait()
                continue
            prompt = self._pending.pop(0)
            self._running = prompt
            try:
                await self._execute(prompt)
            except Exception:  # a bug in the fake must not stop its queue
                log.exception("fake ComfyUI: executing %s failed", prompt.prompt_id)
            finally:
                self._running = None
            await self.send_status()
            if prompt.history_status != "error":
                await self.send("executing", {"node": None, "prompt_id": prompt.prompt_id}, prompt.client_id)

    def _timestamp(self):
        return int(time.time() * 1000)

    async def _execute(self, prompt):
        script, pid, cid, graph = prompt.script, prompt.prompt_id, prompt.client_id, prompt.graph
        messages = []

        async def event(kind, data, record=True):
            data = dict(data, prompt_id=pid)
            if record:
                messages.append([kind, dict(data, timestamp=self._timestamp())])
            await self.send(kind, data, cid)

        await self.send_status()
        await event("execution_start", {"timestamp": self._timestamp()})
        loaders = {node_id: node["inputs"].get("ckpt_name") for node_id, node in graph.items()
                   if node["class_type"] == "CheckpointLoaderSimple"}
        # as the prompt starts, the cache drops what it does not use (execution.py: set_prompt, clean_unused)
        self.cached_checkpoints &= set(loaders.values())
        cached = [n for n in script.cached if n in graph]
        cached += [n for n, checkpoint in loaders.items() if checkpoint in self.cached_checkpoints and n not in cached]
        await event("execution_cached", {"nodes": cached, "timestamp": self._timestamp()})
        executed, outputs = [], {}
        for node_id in _execution_order(graph):
            if node_id in cached:
                continue
            class_type = graph[node_id]["class_type"]
            if prompt.interrupted:
                await self._finish_interrupted(prompt, node_id, executed, messages, event)
                return
            prompt.node = node_id
            await self.send("executing", {"node": node_id, "display_node": node_id, "prompt_id": pid}, cid)
            if script.fail_at in (node_id, class_type):
                await event("execution_error", {
                    "node_id": node_id, "node_type": class_type, "executed": executed,
                    "exception_message": script.exception_message, "exception_type": script.exception_type,
                    "traceback": ["  File \"execution.py\", line 1, in execute\n"],
                    "current_inputs": {}, "current_outputs": {}})
                self.history[pid] = {"prompt": prompt.queue_item(), "outputs": {},
                                     "status": {"status_str": "error", "completed": False, "messages": messages},
                                     "meta": {}}
                return
            if class_type == "KSampler":
                total = script.steps if script.steps is not None else int(graph[node_id]["inputs"].get("steps", 1))
                step = 0
                while step < total or script.hang:
                    await asyncio.sleep(script.step_delay if step < total else 0.01)
                    if prompt.interrupted:
                        await self._finish_interrupted(prompt, node_id, executed, messages, event)
                        return
                    if step < total:
                        step += 1
                        await self.send("progress", {"value": step, "max": total, "prompt_id": pid,
                                                     "node": node_id}, cid)
                        if script.drop_ws_after_step == step:
                            ws = self._sockets.pop(cid, None)
                            if script.refuse_ws_after_drop:
                                self._refuse.add(cid)
                            if ws is not None:
                                await ws.close()
            elif class_type == "CheckpointLoaderSimple":
                await asyncio.sleep(script.load_delay or script.node_delay)
                self.cached_checkpoints.add(graph[node_id]["inputs"].get("ckpt_name"))
            elif script.node_delay:
                await asyncio.sleep(script.node_delay)
            if class_type in ("SaveImage", "PreviewImage"):
                output = {"images": [self._save(graph, node_id)]}
                outputs[node_id] = output
                await self.send("executed", {"node": node_id, "display_node": node_id, "output": output,
                                             "prompt_id": pid}, cid)
            executed.append(node_id)
        await event("execution_success", {"timestamp": self._timestamp()})
        if script.history_delay:
            await asyncio.sleep(script.history_delay)
        prompt.history_status = "success"
        self.history[pid] = {"prompt": prompt.queue_item(), "outputs": outputs,
                             "status": {"status_str": "success", "completed": True, "messages": messages},
                             "meta": {n: {"node_id": n, "display_node": n} for n in outputs}}

    async def _finish_interrupted(self, prompt, node_id, executed, messages, event):
        await event("execution_interrupted", {"node_id": node_id, "node_type": prompt.graph[node_id]["class_type"],
                                              "executed": executed, "timestamp": self._timestamp()})
        prompt.history_status = "interrupted"
        self.history[prompt.prompt_id] = {"prompt": prompt.queue_item(), "outputs": {},
                                          "status": {"status_str": "error", "completed": False,
                                                     "messages": messages}, "meta": {}}

    def _save(self, graph, node_id):
        node = graph[node_id]
        latent = next((n for n in graph.values() if n["class_type"] == "EmptyLatentImage"), None)
        width = int(latent["inputs"]["width"]) if latent else 64
        height = int(latent["inputs"]["height"]) if latent else 64
        sampler = next((n for n in graph.values() if n["class_type"] == "KSampler"), None)
        seed = int(sampler["inputs"]["seed"]) if sampler else 0
        kind = "output" if node["class_type"] == "SaveImage" else "temp"
        prefix = node["inputs"].get("filename_prefix", "ComfyUI") if kind == "output" else "ComfyUI_temp"
        subfolder, _, base = prefix.rpartition("/")
        self._counter += 1
        filename = f"{base}_{self._counter:05}_.png"
        self.files[(subfolder, filename, kind)] = make_png(width, height, seed, graph)
        return {"filename": filename, "subfolder": subfolder, "type": kind}


def _execution_order(graph):
    """Dependencies first (ComfyUI walks back from the outputs; any topological order will do here)."""
    order, seen = [], set()

    def visit(node_id):
        if node_id in seen or node_id not in graph:
            return
        seen.add(node_id)
        for value in graph[node_id].get("inputs", {}).values():
            if isinstance(value, list) and len(value) == 2:
                visit(str(value[0]))
        order.append(node_id)

    for node_id in sorted(graph, key=lambda n: (len(n), n)):
        visit(node_id)
    return order


def _canonical_uuid(value):
    try:
        return str(uuid.UUID(value)) == value
    except (TypeError, ValueError, AttributeError):
        return False


def free_port(host="127.0.0.1"):
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]
