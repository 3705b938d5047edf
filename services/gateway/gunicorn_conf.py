"""gunicorn settings for the gateway, from the same environment as everything else."""
from shared.config import load as _load_settings

_settings = _load_settings()

bind = _settings.bind
workers = _settings.gateway_workers
worker_class = "gthread"
threads = _settings.gateway_threads
# Each worker builds its own database pool and RPC proxies after the fork.
preload_app = False
accesslog = "-"
# The access log must never carry a key given as ?api_key=: log the path without the query string.
access_log_format = '%(h)s "%(m)s %(U)s" %(s)s %(B)s %(M)sms'
graceful_timeout = 20
timeout = 60
# gunicorn's runtime control socket is one fixed path per user: two stacks on one machine (a dev stack
# and the test suite's) would fight over it, and nothing here uses it.
control_socket_disable = True
