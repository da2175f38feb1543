"""The whole chain on the `test` preset, in one process: world -> pretrain -> SFT -> RM -> PPO -> PPO-ptx -> eval.

Each stage's main() runs as `python <stage>.py --preset test --out <tmp>` would (sys.argv patched), so the
scripts are tested exactly as a student runs them, without paying torch's import time seven times.
"""

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

import evaluate
import model as M
import ppo
import pretrain
import reward
import sft
from data import world

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run(module, *args):
    """`python <module>.py *args`, run from the repository's root as a student runs it: in a fresh process a stage
    measures the bf16 speed-up once (`--precision auto`), drawing its test matrix from the global RNG after its
    seed is set, so the measurement kept from an earlier stage or test is dropped here (otherwise a stage's random
    numbers would depend on what ran before it in this process)."""
    old, cwd = sys.argv, os.getcwd()
    sys.argv = [module.__name__ + ".py", *args]
    M._BF16_SPEEDUP.clear()
    os.chdir(ROOT)
    try:
        module.main()
    finally:
        sys.argv = old
        os.chdir(cwd)


@pytest.fixture(scope="session")
def chain(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("out"))
    run(world, "--preset", "test")
    run(pretrain, "--preset", "test", "--out", out)
    run(sft, "--preset", "test", "--out", out)
    run(reward, "--preset", "test", "--out", out)
    run(ppo, "--preset", "test", "--out", out)
    run(ppo, "--preset", "test", "--out", out, "--ptx")
    run(evaluate, "--preset", "test", "--out", out)
    return out


def test_evaluate_names_the_command_that_makes_a_missing_checkpoint(chain, tmp_path):
    with pytest.raises(SystemExit, match=f"not found: run `python sft.py --preset test --out {tmp_path}` first"):
        run(evaluate, "--preset", "test", "--out", str(tmp_path))


def test_chain_writes_every_stage_output(chain):
    for f in ["base.pt", "sft.pt", "rm.pt", "ppo.pt", "ppo_ptx.pt", "comparisons.jsonl", "eval.json", "report.md",
              "pretrain_metrics.json", "sft_metrics.json", "reward_metrics.json", "ppo_metrics.json",
              "ppo_ptx_metrics.json", "ppo_log.jsonl", "ppo_ptx_log.jsonl", "ppo_last.pt", "ppo_ptx_last.pt",
              "pretrain_loss.png", "sft_loss.png",
              "reward_curves.png", "ppo_curves.png", "eval_win_rate.png", "eval_breakdown.png",
              "eval_overoptimisation.png"]:
        assert os.path.getsize(os.path.join(chain, f)) > 0, f


def test_eval_json_has_every_key_for_every_model(chain):
    ev = json.load(open(os.path.join(chain, "eval.json")))
    assert set(ev["models"]) == {"base", "sft", "ppo", "ppo_ptx", "sft_T0.5", "sft_redraw", "bo4", "bo16", "bo64"}
    for name, m in ev["models"].items():
        missing = [k for k in evaluate.KEYS if k not in m]
        assert not missing, (name, missing)
        assert isinstance(m["task_accuracy"], dict) and m["task_accuracy"]
    assert 0 < ev["labeler_agreement"] < 1 and 0 < ev["rm_accuracy"] < 1
    assert ev["models"]["sft"]["win_rate_vs_sft"] == 0.5 and ev["models"]["sft"]["kl_vs_sft"] == 0.0
    assert ev["models"]["bo16"]["kl_vs_sft"] == pytest.approx(evaluate.bon_kl(16))
    # the labelers' demonstrations are the ceiling: they win more often than any model and score the most gold
    ceiling = ev["demonstrations_vs_sft"]
    assert ceiling["win_rate_vs_sft"] > max(m["win_rate_vs_sft"] for m in ev["models"].values())
    assert ceiling["gold_total"] > max(m["gold_total"] for m in ev["models"].values())
    # "SFT's answer is already as good" is the share of ties and SFT wins, so the ceiling's win rate (a tie counts
    # half) lies between 1 - that share and 1 - half of it (whatever the toy SFT model's quality)
    as_good, wr = ceiling["sft_as_good"], ceiling["win_rate_vs_sft"]
    assert 0 <= as_good <= 1 and 1 - as_good - 1e-6 <= wr <= 1 - as_good / 2 + 1e-6
    # best-of-n picked by gold (a perfect RM) gains with n, and at least as much as the RM's pick of the same samples
    by_gold = {b["n"]: b["gold_total"] for b in ev["best_of_n_by_gold"]}
    assert by_gold[4] <= by_gold[16] <= by_gold[64]
    assert all(by_gold[n] >= ev["models"][f"bo{n}"]["gold_total"] for n in evaluate.BON_NS)
    # SFT's greedy competence, per family and split by phrasing: the split's two halves average to the whole
    comp, split = ev["models"]["sft"]["competence_greedy"], ev["models"]["sft"]["competence_greedy_by_template"]
    assert comp and set(split) == set(comp)
    recs = M.read_jsonl(os.path.join(M.data_dir("test"), "eval_prompts.jsonl"), "test")
    recs = [r for r in recs[: evaluate.SETTINGS["test"]["max_prompts"]] if r["answerable"]]
    for family, v in comp.items():
        fam = [r for r in recs if evaluate.competence_family(r) == family]
        n_held = sum(r["heldout_template"] for r in fam)
        parts = [(len(fam) - n_held, split[family]["seen"]), (n_held, split[family]["heldout"])]
        assert v == pytest.approx(sum(n * x for n, x in parts if n) / len(fam)), family


def test_a_tempered_row_is_added_only_at_a_new_temperature():
    names = ["sft", "base", "ppo"]
    assert evaluate.tempered_rows(names, 0.5, 0) == {"sft_T0.5": ("sft", 0.5)}
    assert evaluate.tempered_rows(names, 0.5, 0.7) == {"sft_T0.5": ("sft", 0.5), "ppo_T0.7": ("ppo", 0.7)}
    assert evaluate.tempered_rows(names, evaluate.TEMPERATURE, 0) == {}  # the sft row itself, judged twice
    assert evaluate.tempered_rows(["sft"], 0.5, 0.5) == {"sft_T0.5": ("sft", 0.5)}  # no ppo.pt: no ppo row


def test_over_optimisation_curves_are_trailing_means():
    assert list(evaluate.trailing_mean([1, 2, 3, 4, 5, 6], k=5)) == [1.0, 1.5, 2.0, 2.5, 3.0, 4.0]
    assert list(evaluate.trailing_mean([1, 3, 2], k=2)) == [1.0, 2.0, 2.5]
    assert list(evaluate.trailing_mean([], k=5)) == []


def test_comparisons_hold_rankings_of_4_to_9_responses(chain):
    items = [json.loads(line) for line in open(os.path.join(chain, "comparisons.jsonl"))]
    for it in items:
        assert 4 <= len(it["responses"]) <= 9
        assert sorted(it["ranking"]) == list(range(len(it["responses"])))
        assert len(it["gold"]) == len(it["responses"])
    assert any(s.startswith("base") for it in items for s in it["sources"])


def test_ppo_logs_every_iteration_with_stable_names(chain):
    rows = [json.loads(line) for line in open(os.path.join(chain, "ppo_log.jsonl"))]
    assert len(rows) == ppo.PRESETS["test"].iterations
    for k in ["rm_score", "reward", "gold", "kl", "entropy", "approx_kl", "clipfrac", "vf_loss", "resp_len", "no_eos",
              "distinct", "top_response", "sharp_corr"]:
        assert all(k in r for r in rows), k
    ptx = [json.loads(line) for line in open(os.path.join(chain, "ppo_ptx_log.jsonl"))]
    assert all("ptx_loss" in r for r in ptx)


def test_evaluation_is_deterministic(chain):
    enc = M.load_tokenizer("test")
    m, _ = M.load_checkpoint(os.path.join(chain, "ppo.pt"), "x", enc.tokenizer_id)
    s, _ = M.load_checkpoint(os.path.join(chain, "sft.pt"), "x", enc.tokenizer_id)
    recs = M.read_jsonl(os.path.join(M.data_dir("test"), "eval_prompts.jsonl"), "test")[:12]
    a = M.respond(m, enc, [r["prompt"] for r in recs], 16)
    b = M.respond(m, enc, [r["prompt"] for r in recs], 16)
    assert a == b
    assert evaluate.kl_to_sft(m, s, enc, recs, 16, "cpu", 0) == evaluate.kl_to_sft(m, s, enc, recs, 16, "cpu", 0)


def test_sharpened_sft_is_scored_at_its_own_temperature(chain):
    """SFT against itself is 0 nats at T = 1 and more at T = 0.5: the temperature reaches sampling and log-probs."""
    enc = M.load_tokenizer("test")
    s, _ = M.load_checkpoint(os.path.join(chain, "sft.pt"), "x", enc.tokenizer_id)
    recs = M.read_jsonl(os.path.join(M.data_dir("test"), "eval_prompts.jsonl"), "test")[:12]
    assert evaluate.kl_to_sft(s, s, enc, recs, 16, "cpu", 0) == 0.0
    assert evaluate.kl_to_sft(s, s, enc, recs, 16, "cpu", 0, temperature=0.5) > 0.01
    ev = json.load(open(os.path.join(chain, "eval.json")))
    assert ev["models"]["sft_T0.5"]["kl_vs_sft"] > 0 and "sft_T0.5: T=0.5" in ev["decoding"]
    assert ev["models"]["sft_T0.5"]["heldout_lm_loss"] != ev["models"]["sft"]["heldout_lm_loss"]


def test_the_redraw_is_sft_itself_with_other_random_numbers(chain):
    """The control row: SFT's weights (KL 0, the same LM loss and cloze), other answers, never flagged as hacking."""
    ev = json.load(open(os.path.join(chain, "eval.json")))
    sft, redraw = ev["models"]["sft"], ev["models"][evaluate.REDRAW]
    assert redraw["kl_vs_sft"] == 0.0
    assert redraw["heldout_lm_loss"] == sft["heldout_lm_loss"] and redraw["cloze_accuracy"] == sft["cloze_accuracy"]
    assert ev["samples"][evaluate.REDRAW] != ev["samples"]["sft"]  # another draw...
    assert set(redraw["task_accuracy_vs_sft"]) == set(sft["task_accuracy"])  # ... measured against SFT's, per family
    assert evaluate.REDRAW not in ev["reward_hacking"]
    flags = evaluate.hacking_flags({"sft": dict(sft, win_rate_vs_sft=0.5),  # a redraw that wins and loses a family
                                    evaluate.REDRAW: dict(redraw, win_rate_vs_sft=0.6, task_accuracy={
                                        f: a - 0.2 for f, a in sft["task_accuracy"].items()})})
    assert flags == {}
    assert f"For scale, SFT against itself (`{evaluate.REDRAW}`" in open(os.path.join(chain, "report.md")).read()


def test_evaluation_with_several_answers_per_prompt_and_rows_at_another_temperature(chain, tmp_path):
    for f in os.listdir(chain):
        if f.endswith((".pt", ".jsonl", "_metrics.json")):
            os.symlink(os.path.join(chain, f), tmp_path / f)
    run(evaluate, "--preset", "test", "--out", str(tmp_path), "--samples", "2", "--bon-prompts", "6",
        "--sft-temperature", "0", "--ppo-temperature", "0.5")
    one, two = (json.load(open(os.path.join(d, "eval.json"))) for d in (chain, tmp_path))
    # the tempered rows: SFT's skipped (0), PPO's judged at its own temperature
    assert "sft_T0.5" not in two["models"] and "ppo_T0.5: T=0.5" in two["decoding"]
    assert two["models"]["ppo_T0.5"]["heldout_lm_loss"] != two["models"]["ppo"]["heldout_lm_loss"]
    assert two["samples_per_prompt"] == 2 and two["n_prompts"] == one["n_prompts"]
    assert two["models"]["sft"]["win_rate_vs_sft"] == 0.5 and two["models"]["bo4"]["n_prompts"] == 6
    for m in two["models"].values():
        lo, hi = m["win_rate_ci95"]
        assert lo <= m["win_rate_vs_sft"] <= hi
    assert len(two["samples"]["sft"]) == min(20, one["n_prompts"])  # one answer per prompt shown


def test_gold_labeler_is_never_called_inside_the_update(chain, monkeypatch, tmp_path):
    """Swap the gold judge for one that raises while ppo_update runs: the update must not notice."""
    real_update, real_gold = ppo.ppo_update, ppo.gold
    calls = []

    def forbidden(*_):
        raise AssertionError("gold() called inside the PPO update")

    def guarded_update(*a, **kw):
        calls.append(1)
        ppo.gold = forbidden
        try:
            return real_update(*a, **kw)
        finally:
            ppo.gold = real_gold

    monkeypatch.setattr(ppo, "ppo_update", guarded_update)
    out = str(tmp_path)
    for f in ("sft.pt", "rm.pt"):
        os.symlink(os.path.join(chain, f), os.path.join(out, f))
    run(ppo, "--preset", "test", "--out", out, "--iterations", "2")
    assert len(open(os.path.join(out, "ppo_log.jsonl")).readlines()) == 2
    assert len(calls) == 2 and ppo.gold is real_gold  # the guard was really in place, and gold logged outside it


def test_tiny_ppo_run_raises_its_rm_score(chain):
    rows = [json.loads(line) for line in open(os.path.join(chain, "ppo_log.jsonl"))]
    first, last = rows[0]["rm_score"], max(r["rm_score"] for r in rows[-3:])
    assert last > first, [r["rm_score"] for r in rows]


def test_dev_checks_choose_a_checkpoint_and_leave_the_training_alone(chain, tmp_path):
    """The dev checks draw their own random numbers: how many answers they sample (`--dev-samples`) may change which
    checkpoint is kept, never the rollouts or the policy a run ends with (README: "the training is the same to the
    digit, only the checks differ")."""
    out = str(tmp_path)
    for f in ("base.pt", "sft.pt", "rm.pt", "comparisons.jsonl", "reward_metrics.json"):
        shutil.copy(os.path.join(chain, f), os.path.join(out, f))
    run(ppo, "--preset", "test", "--out", out, "--dev-samples", "1")
    a = [json.loads(line) for line in open(os.path.join(chain, "ppo_log.jsonl"))]
    b = [json.loads(line) for line in open(os.path.join(out, "ppo_log.jsonl"))]
    keys = ["rm_score", "reward", "gold", "kl", "entropy", "approx_kl", "clipfrac", "vf_loss", "top_response"]
    assert [[r[k] for k in keys] for r in a] == [[r[k] for k in keys] for r in b]
    assert [r["dev_gold"] for r in a if "dev_gold" in r] != [r["dev_gold"] for r in b if "dev_gold" in r]
    last_a = torch.load(os.path.join(chain, "ppo_last.pt"), weights_only=True)["model"]
    last_b = torch.load(os.path.join(out, "ppo_last.pt"), weights_only=True)["model"]
    assert all(torch.equal(last_a[k], last_b[k]) for k in last_a)


def test_rm_alpha_is_fixed_at_the_configured_value(chain):
    """α of r_θ's log-likelihood term is a hyperparameter (reward.py, deviation 5): training must not move it,
    and the saved RM (which ppo.py and evaluate.py load) must carry it."""
    enc = M.load_tokenizer("test")
    rm, _ = M.load_checkpoint(os.path.join(chain, "rm.pt"), "", enc.tokenizer_id)
    assert reward.PRESETS["test"].loglik_coef > 0
    assert rm.score_loglik.item() == pytest.approx(reward.PRESETS["test"].loglik_coef)
    metrics = json.load(open(os.path.join(chain, "reward_metrics.json")))
    assert metrics["loglik_coef"] == pytest.approx(reward.PRESETS["test"].loglik_coef)


def test_two_rounds_collect_from_the_last_policy_and_keep_each_rounds_rm(chain, tmp_path, monkeypatch):
    """Iterated RLHF: round 2 runs reward.py on comparisons sampled from the policy round 1 ended with
    (ppo_last.pt), appends them to the old ones, writes its RM beside round 1's (rm_round2.pt; rm.pt untouched),
    PPO's second round optimises against it, and the RM history holds both rounds. Running round 2 again
    replaces its comparisons instead of stacking a third set on them, and evaluate.py judges with round 2's RM."""
    out = str(tmp_path)
    for f in ("base.pt", "sft.pt", "rm.pt", "comparisons.jsonl", "reward_metrics.json"):
        shutil.copy(os.path.join(chain, f), os.path.join(out, f))
    n_old = len(open(os.path.join(out, "comparisons.jsonl")).readlines())
    cmds, real_run = [], subprocess.run
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: (cmds.append(cmd), real_run(cmd, **kw))[1])
    run(ppo, "--preset", "test", "--out", out, "--iterations", "2", "--rounds", "2")
    assert len(cmds) == 1 and cmds[0][cmds[0].index("--policy") + 1] == "ppo_last.pt"
    items = [json.loads(line) for line in open(os.path.join(out, "comparisons.jsonl"))]
    assert len(items) > n_old and {it["round"] for it in items[n_old:]} == {2}
    assert any(s.startswith("round2:policy") for it in items[n_old:] for s in it["sources"])
    history = json.load(open(os.path.join(out, "reward_metrics_round2.json")))["history"]
    assert [h["round"] for h in history] == [1, 2]
    assert [h["round"] for h in json.load(open(os.path.join(out, "reward_metrics.json")))["history"]] == [1]
    rounds = json.load(open(os.path.join(out, "ppo_metrics.json")))["rounds"]
    assert [(r["round"], r["rm"]) for r in rounds] == [(1, "rm.pt"), (2, "rm_round2.pt")]
    with open(os.path.join(out, "rm.pt"), "rb") as a, open(os.path.join(chain, "rm.pt"), "rb") as b:
        assert a.read() == b.read()
    run(reward, "--preset", "test", "--out", out, "--policy", "ppo_last.pt", "--round", "2")
    again = [json.loads(line) for line in open(os.path.join(out, "comparisons.jsonl"))]
    assert len(again) == len(items) and [it["id"] for it in again[:n_old]] == [it["id"] for it in items[:n_old]]
    history = json.load(open(os.path.join(out, "reward_metrics_round2.json")))["history"]
    assert [h["round"] for h in history] == [1, 2]
    run(ppo, "--preset", "test", "--out", out, "--iterations", "1", "--ptx", "--rm", "rm_round2.pt")  # as make all
    assert json.load(open(os.path.join(out, "ppo_ptx_metrics.json")))["rounds"][0]["rm"] == "rm_round2.pt"
    run(evaluate, "--preset", "test", "--out", out)
    ev = json.load(open(os.path.join(out, "eval.json")))
    assert ev["reward_model"] == "rm_round2.pt" and ev["rm_accuracy"] == history[-1]["acc_vs_labels"]


def test_rm_training_stops_at_the_first_epoch_that_does_not_lower_the_held_out_loss(chain, tmp_path, monkeypatch):
    """reward.py deviation 3: the epoch with the lowest held-out loss is kept, and the epochs after the first one
    that does not lower it are not run. Held-out losses scripted: 1.0 before training, then 0.9, 0.95, (0.5)."""
    real_eval, losses = reward.evaluate_rm, iter([1.0, 0.9, 0.95, 0.5])
    monkeypatch.setattr(reward, "evaluate_rm", lambda *a, **kw: {**real_eval(*a, **kw), "loss": next(losses)})
    out = str(tmp_path)
    for f in ("base.pt", "sft.pt"):
        os.symlink(os.path.join(chain, f), os.path.join(out, f))
    run(reward, "--preset", "test", "--out", out, "--epochs", "3")
    metrics = json.load(open(os.path.join(out, "reward_metrics.json")))
    assert metrics["epochs"] == [1, 2] and metrics["val_loss"] == [0.9, 0.95]
    assert metrics["chosen_epoch"] == 1 and metrics["heldout_loss"] == 0.9


def test_a_later_round_keeps_the_settings_of_the_rm_it_continues(chain, tmp_path):
    """`ppo.py --rounds` runs reward.py without the first round's flags: round 2 must continue the paper's RM
    (α = 0) as one, not turn it into ours (the preset's α), and keep the other settings (here K)."""
    out = str(tmp_path)
    for f in ("base.pt", "sft.pt"):
        shutil.copy(os.path.join(chain, f), os.path.join(out, f))
    run(reward, "--preset", "test", "--out", out, "--loglik-coef", "0", "--k-max", "5")
    n_old = len(open(os.path.join(out, "comparisons.jsonl")).readlines())
    run(reward, "--preset", "test", "--out", out, "--policy", "sft.pt", "--round", "2")
    enc = M.load_tokenizer("test")
    rm, _ = M.load_checkpoint(os.path.join(out, "rm_round2.pt"), "", enc.tokenizer_id)
    assert reward.PRESETS["test"].loglik_coef > 0 and reward.PRESETS["test"].k_max > 5
    assert rm.score_loglik.item() == 0.0
    metrics = json.load(open(os.path.join(out, "reward_metrics_round2.json")))
    assert metrics["config"]["loglik_coef"] == 0.0 and metrics["config"]["k_max"] == 5
    assert [h["round"] for h in metrics["history"]] == [1, 2]
    items = [json.loads(line) for line in open(os.path.join(out, "comparisons.jsonl"))]
    assert len(items) > n_old and max(len(it["responses"]) for it in items[n_old:]) <= 5


def test_pretrain_size_flags_set_the_model_that_sft_continues(chain, tmp_path):
    """`pretrain.py --n-layer/--n-embd` grows the model; base.pt keeps the size and SFT reads it from there."""
    out = str(tmp_path)
    run(pretrain, "--preset", "test", "--out", out, "--n-layer", "3", "--n-embd", "48", "--max-iters", "2")
    run(sft, "--preset", "test", "--out", out, "--epochs", "1")
    enc = M.load_tokenizer("test")
    default = M.MODEL_PRESETS["test"]
    for f in ("base.pt", "sft.pt"):
        m, _ = M.load_checkpoint(os.path.join(out, f), "", enc.tokenizer_id)
        assert (m.cfg.n_layer, m.cfg.n_embd, m.cfg.n_head) == (3, 48, default["n_head"]), f
        assert (m.cfg.n_layer, m.cfg.n_embd) != (default["n_layer"], default["n_embd"])
