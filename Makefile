# A miniature InstructGPT. `make all` runs the whole pipeline on the default cpu preset; `make test` runs the
# tests. Both create .venv and install requirements.txt on first use. PRESET=test make all: the whole chain
# in about a minute. Each stage is a file target, so re-running `make all` redoes only what changed.
# PRECISION=bf16 or fp32 sets the training stages' --precision (auto: bf16 where it measures faster, model.py).
# ROUNDS: rounds of iterated RLHF (steps 2 and 3 again, ppo.py --rounds); 2 by default, ROUNDS=1 for one.

PRESET ?= cpu
PRECISION ?= auto
ROUNDS ?= 2
PY := .venv/bin/python
STAMP := .venv/.installed-stamp
D := data/$(PRESET)
O := out/$(PRESET)

.PHONY: all test venv data pretrain sft reward ppo ppo_ptx evaluate bench chat nokl clean

all: evaluate

$(STAMP): requirements.txt
	test -x $(PY) || python3 -m venv .venv
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt
	touch $(STAMP)

venv: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest -q tests

data: $(D)/meta.json
$(D)/meta.json: $(STAMP) data/world.py data/labeler.py data/tasks.py data/bpe.py
	$(PY) data/world.py --preset $(PRESET)

pretrain: $(O)/base.pt
$(O)/base.pt: $(D)/meta.json pretrain.py model.py kernels.py
	$(PY) pretrain.py --preset $(PRESET) --precision $(PRECISION)

sft: $(O)/sft.pt
$(O)/sft.pt: $(O)/base.pt sft.py
	$(PY) sft.py --preset $(PRESET) --precision $(PRECISION)

reward: $(O)/rm.pt
$(O)/rm.pt: $(O)/sft.pt reward.py
	$(PY) reward.py --preset $(PRESET) --precision $(PRECISION)

# PPO against rm.pt; then, for each further round, new comparisons from the policy PPO ended with, the RM trained
# on (rm_round2.pt, ...) and PPO again from SFT. ppo.pt is the last round's; PPO-ptx runs against its RM.
ppo: $(O)/ppo.pt
$(O)/ppo.pt: $(O)/rm.pt ppo.py reward.py
	$(PY) ppo.py --preset $(PRESET) --precision $(PRECISION) --rounds $(ROUNDS)

ppo_ptx: $(O)/ppo_ptx.pt
$(O)/ppo_ptx.pt: $(O)/ppo.pt
	$(PY) ppo.py --preset $(PRESET) --precision $(PRECISION) --ptx --rm $(if $(filter 1,$(ROUNDS)),rm.pt,rm_round$(ROUNDS).pt)

evaluate: $(O)/eval.json
$(O)/eval.json: $(O)/ppo.pt $(O)/ppo_ptx.pt evaluate.py
	$(PY) evaluate.py --preset $(PRESET)

bench: $(STAMP)
	$(PY) bench.py --preset $(PRESET)

chat: $(O)/ppo.pt
	$(PY) chat.py --preset $(PRESET)

# The over-optimisation exercise: PPO with no KL penalty (β = 0), 50 iterations (the default run stops at 40),
# twice. First against our RM, whose log-likelihood term (reward.py, deviation 5) still charges the policy for
# leaving SFT: the RM score rises while dev gold wanders within the dev set's noise. Then against the paper's RM,
# the scalar head alone (--loglik-coef 0, trained into the run's own directory): nothing holds the policy, the RM
# score climbs and gold falls as the policy learns to refuse and to say "I don't know" (README, F8).
nokl: $(O)/rm.pt
	$(PY) ppo.py --preset $(PRESET) --precision $(PRECISION) --kl-coef 0 --iterations 50 --out out/$(PRESET)-nokl
	$(PY) reward.py --preset $(PRESET) --precision $(PRECISION) --loglik-coef 0 --out out/$(PRESET)-nokl-alpha0
	$(PY) ppo.py --preset $(PRESET) --precision $(PRECISION) --kl-coef 0 --iterations 50 --out out/$(PRESET)-nokl-alpha0

clean:
	rm -rf out/$(PRESET) data/$(PRESET)
