"""The web page the API serves at `/` (static files: index.html, *.js, *.css; no build step)."""
