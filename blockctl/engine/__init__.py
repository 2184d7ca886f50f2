"""A model of a vLLM-like engine: step-time profiles, the V1 continuous-batching scheduler, and what-if forecasts.

    types        plain data: EngineConfig, Request, StepShape, StepResult, Prediction
    steptime     StepTimeModel: one step's duration from its composition (fitted parameters + overhead)
    fit          fitting the step-time model to measured rows, cross-validation
    shape        model shapes, GPU memory and the KV blocks they leave (as vLLM sizes its cache)
    profile      profiles/ files: load_profile, list_profiles, build_profile, engine_defaults
    core         Engine: exact steps (schedule + complete), add/restore/abort, run_until
    fastforward  jumping pure-decode stretches in closed form (used by Engine.run_until)
    whatif       predict(): when would a new request's first token come and when would it finish
    decodegroup  predict()'s fast path: every decoding request folded into one group
    benchmark    the speed of all of the above (blockctl bench engine)
"""
