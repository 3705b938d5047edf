"""The web UI, served by the gateway: server-rendered Jinja2 pages, a little plain JavaScript for live
status, no build step. Every page but /login needs the admin session; every state-changing form
carries the session's CSRF token (see session.py)."""
