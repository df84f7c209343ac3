"""Model cards for the demo models, written from the recipe's measured report (never typed by hand).

Each shipped folder gets a ``README.md`` saying what data the model saw, its size, how it was trained and what it
scores on held-out topics, so a user can judge what the demo shows and what it does not.
"""

from __future__ import annotations

from pathlib import Path

_REPRODUCE = "python -m panda_chat.demo.recipe --out panda_chat/demo/models --seed {seed}"


def _base_card(r: dict) -> str:
    c, b, base = r["config"], r["config"]["base"], r["base"]
    return f"""# panda-chat demo base LM

A small Llama causal LM trained from scratch on panda-chat's generated demo corpus (`panda_chat.demo.corpus`), so
that the package can show PANDA steering a model offline, with nothing downloaded. It is a toy: it knows only the
corpus's templated answers about {r['corpus_train_dialogues']} sampled training dialogues' topics, and it makes up
content for any other question. What it does learn is the *styles*: asked a neutral question it answers in a mix of
elementary/expert, concise/detailed and friendly/formal styles, which is what the demo's reward heads steer.

## Data
- {c['train_dialogues']} dialogues (seed {c['seed']}), {r['corpus_distinct_answers']} distinct answers, about the
  training topics only; styles uniform over the 8 combinations. Topics of the held-out split never appear.
- Chat template `<|user|>...<|end|><|assistant|>...<|end|>`; the loss covers the answer and its closing `<|end|>`
  (EOS) only.

## Size
- {base['parameters']:,} parameters (float32), tied input/output embeddings; hidden {b['hidden_size']},
  {b['num_hidden_layers']} layers, {b['num_attention_heads']} heads ({b['num_key_value_heads']} key/value heads),
  MLP {b['intermediate_size']}.
- Byte-level BPE tokenizer, {r['tokenizer_vocab']} tokens, trained on the corpus.

## Training
- AdamW (betas 0.9/0.95, weight decay {b['weight_decay']}), peak lr {b['lr']}, {b['warmup_steps']} warm-up steps then
  cosine decay to {b['min_lr_ratio']} x peak; {base['steps']} steps of {b['batch_size']} dialogues
  ({base['tokens_seen']:,} tokens seen); {base['seconds']:.0f} s on CPU ({r['threads']} torch threads,
  torch {r['torch_version']}).

## Results (measured by the recipe)
- Answer-token cross-entropy: first step {base['first_loss']:.3f}, last 20 steps {base['final_train_loss']:.3f},
  held-out topics {base['heldout_loss']:.3f} (nats/token).

Reproduce: `{_REPRODUCE.format(seed=c['seed'])}`.
"""


def _heads_card(r: dict) -> str:
    c = r["config"]
    rows = "\n".join(
        f"| `{h['pole']}` | {h['train_pairs']} | {h['val_accuracy']:.3f} | {h['heldout_accuracy']:.3f} "
        f"| {h['heldout_prefix_accuracy']:.3f} |"
        for h in r["heads"]
    )
    return f"""# panda-chat demo reward heads

One Bradley-Terry reward head per pole of the default preference catalog, each a {c['head_kind']} layer on the demo
base LM's final hidden state (`panda_chat.rewards.heads.RewardHead`), trained with
`panda_chat.rewards.training.train_reward_head`. A head refuses to load onto another base model.

## Data
- Per pole: {c['head_pairs_per_pole']} pairs of complete answers and {c['head_pairs_per_pole']} pairs of answers cut
  after the same number of words (PANDA scores partial answers), about training topics. Chosen has the pole,
  rejected the opposite pole; the other two dimensions and the phrasing are the same.
- Held-out: {c['heldout_pairs_per_pole']} pairs per pole (complete, and cut) about topics training never saw.

## Training
- AdamW, up to {c['head_epochs']} epochs, early stopping on a random 10% validation split of the training pairs;
  calibration (mean/std of the reward over the training responses) stored in each file.

## Results (pairwise accuracy, measured by the recipe)

| pole | train pairs | validation | held-out topics, complete | held-out topics, cut |
| --- | --- | --- | --- | --- |
{rows}

Reproduce: `{_REPRODUCE.format(seed=c['seed'])}`.
"""


def _reward_model_card(r: dict) -> str:
    c, m = r["config"], r["reward_model"]
    return f"""# panda-chat demo full reward model: `{m['pole']}`

A `LlamaForSequenceClassification` (one label: a scalar reward) fine-tuned from the demo base LM with the
Bradley-Terry loss (`panda_chat.rewards.training.train_reward_model`); `panda_reward.json` holds its calibration. It
shares the base model's tokenizer, so the decoder scores it on token ids with a KV cache.

## Data
- {c['reward_model_pairs']} complete and {c['reward_model_pairs']} cut pairs for `{m['pole']}` vs
  `{'elementary' if m['pole'] == 'expert' else 'the opposite pole'}` about training topics; {m['train_pairs']} used
  for training, the rest for validation.

## Size and training
- {m['parameters']:,} parameters (float32); {m['epochs']} epoch(s), lr {m['lr']}, batch 16, AdamW;
  {m['seconds']:.0f} s on CPU.

## Results (pairwise accuracy, measured by the recipe)
- Validation (training topics): {m['val_accuracy']:.3f}; held-out topics, complete answers: {m['heldout_accuracy']:.3f}.

Reproduce: `{_REPRODUCE.format(seed=c['seed'])}`.
"""


def _overview_card(r: dict) -> str:
    c, lam = r["config"], r["lambda_fit"]
    grid = ", ".join(f"{k} {v:+.3f}" for k, v in lam["mean_value"].items())
    counts = ", ".join(f"{k}: {v}" for k, v in lam["best_counts"].items() if v)
    learned = "not measured" if lam["learned_value"] is None else f"{lam['learned_value']:+.3f}"
    return f"""# panda-chat embedded demo models

Made by `{_REPRODUCE.format(seed=c['seed'])}` in {r['total_seconds']:.0f} s on CPU ({r['threads']} torch threads).
Every number below and in the folders' cards was measured by that run (`recipe_report.json`).

| what | where | card |
| --- | --- | --- |
| base LM ({r['base']['parameters']:,} parameters) | `base/` | `base/README.md` |
| reward heads, one per pole | `heads/<pole>.safetensors` | `heads/README.md` |
| full reward model (`{r['reward_model']['pole']}`) | `{r['reward_model']['folder']}/` | its `README.md` |
| learned lambda(x, t) | `{lam['file']}` (+ `lambda.json`) | below |

Loaders: `panda_chat.demo.demo_model_dir()`, `demo_head_paths()`, `demo_reward_model_dirs()`, `demo_lambda_path()`.

## Learned lambda

A `panda_chat.lam.learned.LearnedLambda` ({lam['kind']}) fitted with `panda_chat.evaluation.lambda_fitting.fit_lambda`
on {lam['prompts']} training-topic prompts, each paired with a synthetic user (one pole per dimension, confidence
{c['lambda_fit']['min_confidence']}-1.0) whose reward weights and preference vector are built exactly as ChatPanda
builds them from a profile. Each prompt was decoded ({lam['max_new_tokens']} new tokens, top-k
{c['lambda_fit']['top_k']}) under every schedule of the grid; the best schedule by
J = reward gain - {lam['beta']} x fluency loss is the prompt's target.

- Mean J per schedule: {grid}.
- Best single schedule (what a fixed lambda can do at best on these prompts): `{lam['best_fixed']}`, J =
  {lam['best_fixed_value']:+.3f}; per-prompt oracle: {lam['oracle_value']:+.3f}; the fitted model decoding the same
  prompts: {learned}.
- Prompts per best schedule: {counts}.
"""


def write_cards(out: Path, report: dict) -> None:
    """Write ``README.md`` into ``out`` (overview and lambda), ``base/``, ``heads/`` and the reward model's folder."""
    (out / "README.md").write_text(_overview_card(report), encoding="utf-8")
    (out / "base" / "README.md").write_text(_base_card(report), encoding="utf-8")
    (out / "heads" / "README.md").write_text(_heads_card(report), encoding="utf-8")
    (out / report["reward_model"]["folder"] / "README.md").write_text(_reward_model_card(report), encoding="utf-8")
