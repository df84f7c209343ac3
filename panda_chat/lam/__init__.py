"""lambda(x, t) functions: constant (ARGS), schedules and the learned context-aware model."""

from panda_chat.lam.base import ConstantLambda, LambdaContext, LambdaFunction

__all__ = ["ConstantLambda", "LambdaContext", "LambdaFunction"]
