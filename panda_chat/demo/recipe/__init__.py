"""Code that only rebuilds the embedded demo models (and measures them): not part of the runtime wheel.

``python -m panda_chat.demo.recipe`` makes ``panda_chat/demo/models`` (``pipeline``: the stages; ``base_lm``,
``lambda_stage``, ``cards``: the base LM's training, the lambda fit, the model cards); ``python -m
panda_chat.demo.recipe.table2`` measures the seed paper's Table 2 on them. The runtime (``panda-chat demo``,
``ChatPanda``, evaluation) never imports this package: an import-linter contract in ``pyproject.toml`` checks it, and
``pyproject.toml`` excludes it from the wheel.
"""
