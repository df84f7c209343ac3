"""Embedded demo models (a small base LM, reward heads, lambda) and the corpus generator they were trained on.

The recipe that rebuilds the models is ``panda_chat.demo.recipe`` (run from a source checkout; not in the wheel).

The loader functions are re-exported here; ``demo_model_dir()`` is the demo base LM's folder (what ``ChatPanda()``
loads when no model is given, through ``chat_model.model.default_model_path``).
"""

from panda_chat.demo.models import (
    DEMO_MODELS_DIR,
    DemoModelsMissing,
    demo_head_paths,
    demo_lambda_path,
    demo_model_dir,
    demo_report,
    demo_reward_model_dirs,
)

__all__ = [
    "DEMO_MODELS_DIR",
    "DemoModelsMissing",
    "demo_head_paths",
    "demo_lambda_path",
    "demo_model_dir",
    "demo_report",
    "demo_reward_model_dirs",
]
