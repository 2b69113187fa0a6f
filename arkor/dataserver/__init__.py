"""The data server role: HTTP routes and process wiring around the HTTP-free volume engine.

`arkor.data` is the engine (needles, volumes, index, `NeedleStore`, scrub and repair logic) and
knows nothing of the web; this package serves it (`app`: routes; `main`: `arkor data` and what
`arkor allinone` runs). Nothing under `arkor.data` may import from here.
"""
