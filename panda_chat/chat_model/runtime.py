"""What ChatPanda shares per loaded base model: the decoder, one decode lock, the pole rewards, likelihood scoring.

The weights themselves live in the process-wide model registry (``panda_chat.registry``); a ``ModelRuntime`` is the
thin per-model layer ChatPanda adds on top, shared the same way so that a thousand ``ChatPanda`` objects on one
model share one decoder, one lock and one cache of built reward sources:

- the scheduler (``panda_chat.serving.BatchScheduler``) owns the decodes: concurrent calls join one running batch;
- the lock is held around every forward pass (each scheduler step, likelihood scoring), so they never interleave;
- ``PoleRewards`` caches, per embedder, the reward source built for each catalog pole on this model;
- ``defaults`` are rewards and a lambda that belong to this very model, read from its heads manifest: the reward
  head trained for each pole on its hidden states and the lambda fitted for it (``ModelDefaults``). A model with
  none is said so once, and its heads can be built here (``ensure_heads``).
"""

from __future__ import annotations

import copy
import sys
import threading
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from panda_chat.decoding import PandaDecoder
from panda_chat.lam.base import LambdaFunction
from panda_chat.lam.learned import LearnedLambda
from panda_chat.personalize import PoleRewards
from panda_chat.registry import resolve_device, resolve_dtype, shared_registry
from panda_chat.rewards.heads import BaseModelSignature
from panda_chat.rewards.manifest import find_manifest
from panda_chat.serving import BatchScheduler, RequestScheduler
from profiles import RewardSpec

if TYPE_CHECKING:
    from panda_chat.serving.engine_process import EngineClient

PREP_SLOTS = 2  # requests prepared at once per model (see ``ModelRuntime.prep_slots``)


@dataclass(frozen=True)
class ModelDefaults:
    """Rewards and lambda made for one base model: they replace the catalog's zero-shot rewards on that model.

    They come from the model's heads manifest (``panda_chat.rewards.manifest``): in the model folder (the embedded
    demo model ships one) or, for hub models and bootstrapped heads, in the user data directory keyed by the model's
    identity. ``found`` is False when the model has no manifest at all.
    """

    pole_rewards: dict[str, RewardSpec] = field(default_factory=dict)  # dimension.pole -> reward for this model
    lam: LambdaFunction | float | None = None
    lam_preference_dim: int = 0  # the preference-vector length the lambda was fitted for
    found: bool = False
    folder: str | None = None

    @classmethod
    def for_model(cls, path: str, model=None) -> ModelDefaults:
        """The heads and lambda of ``path``'s manifest (``model`` keys the user data directory's copy)."""
        signature = BaseModelSignature.of(model).model_dump_json() if model is not None else ""
        located = find_manifest(path, signature)
        if located is None:
            return cls()
        folder, manifest = located
        heads = {name: RewardSpec(kind="head", path=str(file)) for name, file in manifest.head_paths(folder).items()}
        lam: LearnedLambda | float | None = None
        dim = 0
        if manifest.lam is not None and manifest.lam.path:
            learned = LearnedLambda.load((folder / manifest.lam.path).resolve())
            lam, dim = learned, learned.config.preference_dim
        elif manifest.lam is not None and manifest.lam.value is not None:
            lam = float(manifest.lam.value)
        return cls(pole_rewards=heads, lam=lam, lam_preference_dim=dim, found=True, folder=str(folder))


@dataclass
class ModelRuntime:
    """One base model as ChatPanda uses it (see the module docstring)."""

    path: str
    decoder: PandaDecoder
    defaults: ModelDefaults = field(default_factory=ModelDefaults)
    lock: threading.RLock = field(default_factory=threading.RLock)
    _pole_rewards: dict[str, PoleRewards] = field(default_factory=dict)
    _scheduler: RequestScheduler | None = field(default=None, repr=False)
    _heads_checked: bool = False
    prep_slots: threading.BoundedSemaphore = field(default_factory=lambda: threading.BoundedSemaphore(PREP_SLOTS))
    """Calls preparing a request (profile reads and writes, prompt building) at once. More Python threads would
    only take turns on the GIL, and the scheduler thread, which needs it back after every torch op, would wait."""

    @property
    def tokenizer(self):
        return self.decoder.tokenizer

    @property
    def scheduler(self) -> RequestScheduler:
        """The model's one decode scheduler (``panda_chat.serving``): concurrent calls share its decoding steps.
        In this process it takes ``lock`` around each step, so never call it while holding ``lock``."""
        if self._scheduler is not None:  # set once: no need to wait for the running step
            return self._scheduler
        with self.lock:
            if self._scheduler is None:
                self._scheduler = BatchScheduler(self.decoder, lock=self.lock)
            return self._scheduler

    def start_engine_process(self, max_batch: int) -> EngineClient:
        """Move this model's decode loop to an engine process of its own (``panda_chat.serving.engine_process``);
        ChatPanda's plain-text decodes then go there. Returns once the engine has loaded the model."""
        from panda_chat.serving.engine_process import EngineClient, EngineSpec

        model = self.decoder.model
        spec = EngineSpec(
            model=self.path,
            device=str(self.decoder.device),
            dtype=str(model.dtype).removeprefix("torch."),
            max_batch=max_batch,
            threads=torch.get_num_threads(),
        )
        client = EngineClient(spec, local=BatchScheduler(self.decoder, max_batch=max_batch, lock=self.lock))
        with self.lock:
            previous, self._scheduler = self._scheduler, client
        if previous is not None:
            previous.close()
        return client

    def stop_engine_process(self) -> None:
        """Close the engine process (if any); decodes go back to a scheduler thread in this process."""
        from panda_chat.serving.engine_process import EngineClient

        with self.lock:
            client = self._scheduler
            if not isinstance(client, EngineClient):
                return
            self._scheduler = None
        client.close()
        client.local.close()

    def pole_rewards(self, embedder) -> PoleRewards:
        """The pole-reward cache for one embedder (the profile store's), created on first use."""
        key = getattr(embedder, "name", None) or repr(embedder)
        cached = self._pole_rewards.get(key)
        if cached is not None:  # no need to wait for the running decode step
            return cached
        with self.lock:
            if key not in self._pole_rewards:
                self._pole_rewards[key] = PoleRewards(self.decoder.model, self.decoder.tokenizer, embedder=embedder)
            return self._pole_rewards[key]

    def ensure_heads(self, catalog, build: bool) -> None:
        """A model with no heads manifest: say so once, and with ``build`` bootstrap its heads now (a progress bar
        on stderr) into the user data directory, where the next process finds them too. Never a silent fall back
        to the zero-shot text reward, which is about 100x slower than heads."""
        if self.defaults.found or self._heads_checked:  # decided once: no need to wait for the running step
            return
        with self.lock:
            if self.defaults.found or self._heads_checked:
                return
            self._heads_checked = True
            command = f"panda-chat reward bootstrap --base {self.path}"
            if not build:
                warnings.warn(
                    f"no reward heads for {self.path}: its poles are scored by the zero-shot text reward (about 100x "
                    f"slower than heads); build them once with `{command}` (or ChatPanda(build_heads=True))",
                    RuntimeWarning,
                    stacklevel=4,
                )
                return
            from panda_chat.demo.corpus import style_pair_source
            from panda_chat.rewards.bootstrap import bootstrap_heads
            from panda_chat.rewards.manifest import user_heads_dir

            model = self.decoder.model
            out = user_heads_dir(self.path, BaseModelSignature.of(model).model_dump_json())
            print(
                f"panda-chat: no reward heads for {self.path}; building them once into {out} "
                "(ChatPanda(build_heads=False) turns this off)",
                file=sys.stderr,
                flush=True,
            )
            bootstrap_heads(
                model,
                self.tokenizer,
                out,
                catalog=catalog,
                base_model=self.path,
                pair_source=style_pair_source(pairs_per_pole=200, heldout_per_pole=40),
                progress=sys.stderr.isatty(),
            )
            self.defaults = ModelDefaults.for_model(self.path, model)

    def prompt_ids(self, text: str) -> list[int]:
        """The token ids the decoder feeds for a prompt text (same BOS handling as ``generate``)."""
        return self.decoder.encode_prompts(text).input_ids[0].tolist()

    @torch.inference_mode()
    def next_token_logprobs(self, prefix: str) -> torch.Tensor:
        """log p(token | prefix) under the base model, over the whole vocabulary."""
        ids = torch.tensor([self.prompt_ids(prefix)], device=self.decoder.model.device)
        with self.lock:
            logits = self.decoder.model(input_ids=ids).logits[0, -1].float()
        return torch.log_softmax(logits, dim=-1)

    @torch.inference_mode()
    def continuation_logprobs(self, prefix: str, options: Sequence[str]) -> list[float]:
        """log p(option | prefix) under the base model for each option.

        Options are tokenised together with the prefix (BPE may merge across the boundary), and each option's tokens
        after its longest common prefix with the prefix's own tokens are scored. The tokens every option shares go
        through the model once; each option then only runs its own few tokens on a copy of that cache, and an option
        that is a single token after the shared part needs no forward pass of its own.
        """
        base = self.prompt_ids(prefix)
        rows, starts = [], []
        for option in options:
            ids = self.prompt_ids(prefix + option)
            common = 0
            while common < min(len(ids), len(base)) and ids[common] == base[common]:
                common += 1
            rows.append(ids)
            starts.append(max(min(common, len(ids) - 1), 1))  # at least one scored token, and one to condition on
        shared = min(starts)
        model = self.decoder.model
        device = model.device
        with self.lock:
            out = model(input_ids=torch.tensor([rows[0][:shared]], device=device), use_cache=True)
            cache, last = out.cache, out.logits[0, -1].float()
            scores = []
            for ids, start in zip(rows, starts, strict=False):
                suffix = ids[shared:]
                predictions = [last]
                if len(suffix) > 1:
                    own = model(
                        input_ids=torch.tensor([suffix[:-1]], device=device), cache=copy.deepcopy(cache), use_cache=True
                    )
                    predictions.extend(own.logits[0].float())
                logprobs = torch.log_softmax(torch.stack(predictions), dim=-1)
                scores.append(sum(float(logprobs[j, suffix[j]]) for j in range(start - shared, len(suffix))))
        return scores


_runtimes: dict[tuple[str, str, str], ModelRuntime] = {}
_runtimes_lock = threading.Lock()


def model_runtime(path: str | Path, device: str = "auto", dtype: str = "auto") -> ModelRuntime:
    """The shared runtime of (path, device, dtype); the weights load once, through the model registry."""
    resolved_device = resolve_device(device)
    resolved_dtype = resolve_dtype(dtype, resolved_device)
    local = Path(path).expanduser()
    canonical = str(local.resolve()) if local.exists() else str(path)
    key = (canonical, str(resolved_device), str(resolved_dtype))
    with _runtimes_lock:
        runtime = _runtimes.get(key)
    if runtime is not None:
        return runtime
    decoder = PandaDecoder.from_pretrained(
        canonical, device=resolved_device, dtype=resolved_dtype, registry=shared_registry()
    )
    with _runtimes_lock:
        return _runtimes.setdefault(
            key,
            ModelRuntime(path=canonical, decoder=decoder, defaults=ModelDefaults.for_model(canonical, decoder.model)),
        )
