"""``radsight serve``: a local web viewer and JSON API over the inference core (:mod:`radsight.infer`).

Importing this package is light (the command line reads its default); :mod:`radsight.serve.app` is the
application.
"""

DEFAULT_MAX_UPLOAD_MB = 64.0
