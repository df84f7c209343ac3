"""Evaluation and fitting that need the decoder: response scoring, the lambda candidate set, lambda fitting and the
method-comparison runner.

Why a package of its own: lambda fitting and the candidate set *decode* (many lambdas per prompt, as rows of one
batch), and evaluation decodes with several methods, so they sit above ``panda_chat.decoding`` in the layer order.
What they fit or compute stays below, free of the decoder: the lambda schedules and the learned lambda model
(``panda_chat.lam.schedules``, ``panda_chat.lam.learned``, fitted from plain arrays) and the metrics
(``panda_chat.metrics``). Nothing under ``panda_chat.lam`` or ``panda_chat.rewards`` imports this package.

- ``objective``: the selection rule J = reward gain - beta * fluency loss, in one place;
- ``scoring``: R(x, y), base-model NLL and degeneration of finished responses (teacher-forced, exact);
- ``candidate_set``: decode lambda_1..lambda_M as rows of one batch, keep the best response by J;
- ``lambda_fitting``: a grid of schedules per training prompt -> the best per prompt -> ``LearnedLambda``;
- ``runner``: greedy / ARGS / PANDA (learned lambda) / PANDA candidate set, measured with ``panda_chat.metrics``.
"""
