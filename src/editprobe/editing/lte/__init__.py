"""The locate-then-edit (LTE) engine: ``LTEEditor`` (engine.py) with its internals (keys, target
search, context templates, the layout of prompt rows, the closed-form solvers, the covariance
statistics and their store, the preserved keys, the target cache, the editor's state) and
methods/, one small module per method that states only how it differs from the engine.
docs/engine.md describes it, docs/engine-extension.md its override points."""
