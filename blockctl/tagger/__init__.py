"""Response-length tagger: predicts a request's output tokens from its prompt (train, evaluate, serve, log).

Importing this package needs neither torch nor transformers; the modules that do (``model``, ``train``,
``predict``, ``online``) raise TaggerError naming ``pip install 'blockctl[tagger]'`` when they are missing.
"""
