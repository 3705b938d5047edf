"""Headers every answer carries: no page of GAZE may be framed by another site (clickjacking the admin's
buttons: regenerate a key, delete a preset). Both the old header and CSP's frame-ancestors, for old and
new browsers alike."""
from __future__ import annotations


class NoFraming:
    def process_response(self, req, resp, resource, req_succeeded):
        resp.set_header("X-Frame-Options", "DENY")
        resp.set_header("Content-Security-Policy", "frame-ancestors 'none'")
