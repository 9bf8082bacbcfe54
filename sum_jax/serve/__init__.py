"""`python -m sum_jax.serve`: a local web page and JSON API comparing models click by click
(`app.py` the routes, `sessions.py` the models and their embedding cache, `images.py` the
photos, `prompts.py` the request and mask formats, `server.py` uvicorn, `static/` the page)."""
