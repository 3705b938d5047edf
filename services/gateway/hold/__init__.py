"""The gateway's asyncio side: requests that wait (`Prefer: wait=N`) and server-sent event streams.

gunicorn's 2 x 8 threads cannot hold hundreds of waiting clients, so the gateway's workers run an asyncio
server (uvicorn, services/gateway/hold/worker.py) whose app (hold/app.py) serves these requests itself
and hands every other request to the WSGI app in a thread pool of the same size as before (a2wsgi). A
held request costs a coroutine, not a thread: it waits on the job read model's change messages
(hold/changes.py, one Redis subscription per worker), never on a polling loop.
"""
