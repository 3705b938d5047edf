"""API key authentication for every resource that declares `auth_required`."""
import falcon

from services.gateway.errors import ApiError


class ApiKeyAuth:
    def __init__(self, keys, limiter=None):
        self.keys = keys
        self.limiter = limiter   # rate_limit.RateLimiter: invalid keys per address, requests per key (None = off)

    def process_resource(self, req, resp, resource, params):
        if not getattr(resource, "auth_required", False):
            return
        key = req.get_header("X-API-Key") or req.get_param("api_key")
        if not key:
            raise ApiError(falcon.HTTP_401, "missing API key: send the X-API-Key header or ?api_key=", "X-API-Key")
        if self.limiter is not None:
            self.limiter.guard(req, key)
        name = self.keys.verify(key)
        if not name:
            if self.limiter is not None:
                self.limiter.auth_failed(req)
            raise ApiError(falcon.HTTP_403, "invalid API key", "X-API-Key")
        req.context.api_key_name = name   # who owns the jobs this request creates, whose jobs it lists
        if self.limiter is not None:
            self.limiter.passed(req, key)
