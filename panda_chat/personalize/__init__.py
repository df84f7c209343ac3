"""PreferenceContext -> reward sources, per-row weights and lambda: the join of the profile store and the decoder."""

from panda_chat.personalize.plan import (
    DEFAULT_LAMBDA,
    PersonalizationPlan,
    Personalizer,
    PoleSteering,
    with_model_rewards,
)
from panda_chat.personalize.sources import PoleReward, PoleRewards, UserHeadReward, reward_name, user_head_rewards
from panda_chat.personalize.steering_weights import MIN_STEERING, pole_steering

__all__ = [
    "DEFAULT_LAMBDA",
    "MIN_STEERING",
    "PersonalizationPlan",
    "Personalizer",
    "PoleReward",
    "PoleRewards",
    "PoleSteering",
    "UserHeadReward",
    "pole_steering",
    "reward_name",
    "user_head_rewards",
    "with_model_rewards",
]
