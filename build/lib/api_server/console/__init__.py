"""The web console: static files the HTTP gateway serves at ``/``.

Plain ES modules and CSS with no build step, so what ships is exactly what is in
``static/`` and no Node is needed at run time. The console talks to the HTTP/JSON API of the
same origin only (bearer token in a header, never a cookie), which the gateway's strict CSP
(``default-src 'self'``, no inline script or style) allows and nothing else.
"""
