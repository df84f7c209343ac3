"""lambda(x, t) functions: constant (ARGS), schedules and the learned context-aware model."""

from panda_chat.lam.base import ConstantLambda, LambdaContext, LambdaFunction
from panda_chat.lam.learned import LambdaTrainingSet, LearnedLambda
from panda_chat.lam.schedules import ExponentialDecayLambda, LinearDecayLambda, parse_lambda, schedule_grid

__all__ = [
    "ConstantLambda",
    "ExponentialDecayLambda",
    "LambdaContext",
    "LambdaFunction",
    "LambdaTrainingSet",
    "LearnedLambda",
    "LinearDecayLambda",
    "parse_lambda",
    "schedule_grid",
]
