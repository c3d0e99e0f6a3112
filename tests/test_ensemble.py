"""The conservative dream: an ensemble of Ms, its disagreement, and the penalty taken off the dream's reward."""

import copy

import pytest
import torch

from tests.conftest import DEVICES, smoke_config, tolerance
from worldmodels.artifacts import load_mdnrnn
from worldmodels.config import ConfigError
from worldmodels.core.metrics import MetricsLog
from worldmodels.models.mdnrnn import (
    MDNRNNEnsemble,
    MixturePrediction,
    disagreement,
    member_rows,
    members_of,
)
from worldmodels.stages import collect, encode
from worldmodels.stages import mdnrnn as mdnrnn_stage
from worldmodels.stages import vae as vae_stage
from worldmodels.vmc.dream import DreamEnv
from worldmodels.vmc.m_training import settings_that_matter

FIELDS = ("logits", "means", "log_stds", "reward", "done_logit")


def _constant_prediction(means: list[list[float]]) -> MixturePrediction:
    """Members ``K`` x rows 1 x ``Z`` dims with one sure component at ``means[k]``."""
    mu = torch.tensor(means)[:, None, :, None]  # (K, 1, Z, 1)
    zeros = torch.zeros(len(means), 1)
    return MixturePrediction(torch.zeros_like(mu), mu, torch.zeros_like(mu), zeros, zeros)


def test_disagreement_is_the_members_spread_of_the_expected_next_z():
    # dims: members at 0 and 2 -> std 1; at 0 and 4 -> std 2; mean over the two dims: 1.5
    assert disagreement(_constant_prediction([[0.0, 0.0], [2.0, 4.0]])).item() == pytest.approx(1.5)
    assert disagreement(_constant_prediction([[1.0, -3.0]] * 3)).item() == 0.0


def test_member_rows_takes_each_rows_own_member():
    torch.manual_seed(0)
    stacked = MixturePrediction(*(torch.randn(3, 4, 2, 5) for _ in range(3)), torch.randn(3, 4), torch.randn(3, 4))
    member = torch.tensor([2, 0, 1, 2])
    picked = member_rows(stacked, member)
    for row, k in enumerate(member.tolist()):
        for name in FIELDS:
            torch.testing.assert_close(getattr(picked, name)[row], getattr(stacked, name)[k, row])


def _ensemble(members: int, identical: bool, device: str = "cpu") -> MDNRNNEnsemble:
    torch.manual_seed(1)
    ensemble = MDNRNNEnsemble(members, z_size=4, action_size=1, hidden_size=8, mixtures=2)
    with torch.no_grad():
        for member in ensemble.members:
            member.done_head.bias.fill_(-20.0)  # no dream ends early
    if identical:
        for member in ensemble.members[1:]:
            member.load_state_dict(ensemble.members[0].state_dict())
    return ensemble.eval().to(device)


def _dream_steps(model, steps: int, penalty: float = 0.0, seed: int = 3, device: str = "cpu"):
    """Rewards, dones, z, h and disagreements of ``steps`` dream steps of 6 rows with fixed randomness."""
    generator = torch.Generator().manual_seed(seed)
    start_mu, noise = torch.randn(5, 4, generator=generator), torch.randn(6, 4, generator=generator)
    draws = [(torch.rand(6, 4, generator=generator), torch.randn(6, 4, generator=generator)) for _ in range(steps)]
    actions = torch.rand(steps, 6, 1, generator=generator) * 2 - 1
    dream = DreamEnv(model, start_mu, torch.full((5, 4), -2.0), max_steps=steps + 1, penalty=penalty,
                     generator=torch.Generator().manual_seed(seed))
    dream.reset(6, starts=torch.arange(6) % 5, noise=noise)
    return [dream.step(actions[t], draws[t]) for t in range(steps)]


@pytest.mark.parametrize("device", DEVICES)
def test_an_ensemble_of_identical_members_dreams_as_one_m_and_never_disagrees(device):
    ensemble = _ensemble(3, identical=True, device=device)
    single = copy.deepcopy(ensemble.members[0])
    for together, alone in zip(_dream_steps(ensemble, 8, penalty=5.0, device=device),
                               _dream_steps(single, 8, device=device), strict=True):
        assert together.disagreement.abs().max().item() == 0.0
        for name in ("z", "reward", "h", "c"):
            torch.testing.assert_close(getattr(together, name), getattr(alone, name), **tolerance(device))


def test_the_penalty_takes_its_weight_times_the_disagreement_off_each_steps_reward():
    ensemble = _ensemble(3, identical=False)
    plain, penalised = _dream_steps(ensemble, 6), _dream_steps(ensemble, 6, penalty=2.5)
    assert all(step.disagreement.min().item() > 0 for step in plain), "members of other weights disagree"
    for a, b in zip(plain, penalised, strict=True):
        torch.testing.assert_close(a.z, b.z)  # the penalty changes the reward, not the dream
        torch.testing.assert_close(b.reward, a.reward - 2.5 * a.disagreement, rtol=1e-5, atol=1e-6)


def test_each_row_steps_with_a_member_drawn_at_random_and_c_reads_the_first_members_h():
    ensemble = _ensemble(3, identical=False)
    with torch.no_grad():  # member k predicts z = 10 k in every dimension, all but surely
        for k, member in enumerate(ensemble.members):
            member.mixture_head.weight.zero_()
            weight_count = member.mixture_head.bias.numel() - 2 * 4 * 2
            means_and_stds = member.mixture_head.bias[weight_count:].view(4, 4)
            member.mixture_head.bias[:weight_count] = 0.0
            means_and_stds[:, :2], means_and_stds[:, 2:] = 10.0 * k, -7.0
    dream = DreamEnv(ensemble, torch.zeros(1, 4), torch.full((1, 4), -30.0), max_steps=5,
                     generator=torch.Generator().manual_seed(0))
    z = dream.reset(300)
    actions = torch.zeros(300, 1)
    step = dream.step(actions)
    drawn = (step.z[:, 0] / 10).round().long()
    assert set(drawn.tolist()) == {0, 1, 2}, "every member drives some rows"
    torch.testing.assert_close(step.z, (10.0 * drawn)[:, None].expand(-1, 4).float(), atol=1e-2, rtol=0)
    _, outputs, _ = ensemble.members[0](z[:, None], actions[:, None])
    torch.testing.assert_close(step.h, outputs[:, 0])
    assert step.disagreement.mean().item() == pytest.approx(torch.tensor([0.0, 10.0, 20.0]).std(unbiased=False).item(),
                                                           rel=1e-4)


def test_an_ensemble_is_refused_where_it_cannot_work():
    with pytest.raises(ConfigError, match="controller.disagreement_penalty"):
        smoke_config("controller.disagreement_penalty=1.0")
    with pytest.raises(ConfigError, match="controller.dream_starts"):
        smoke_config("mdnrnn.ensemble=2", "controller.dream_starts=any")
    with pytest.raises(ConfigError, match="mdnrnn.ensemble"):
        smoke_config("mdnrnn.ensemble=0")
    with pytest.raises(ValueError, match="first frames only"):
        DreamEnv(_ensemble(2, False), torch.zeros(2, 4), torch.zeros(2, 4),
                 start_states=(torch.zeros(2, 8), torch.zeros(2, 8)))


@pytest.fixture(scope="module")
def trained_ensemble(smoke_run, tmp_path_factory):
    """An M of its own (an ensemble of 3, 6 epochs): trained once for this module on a copy of the shared
    smoke run's rollouts, V and latents (which mdnrnn.* settings do not change: their stages do nothing)."""
    paths = smoke_run.copy("encode", tmp_path_factory.mktemp("ensemble"))
    config = smoke_config("mdnrnn.ensemble=3", "mdnrnn.epochs=6", "mdnrnn.eval_every=1")
    for stage in (collect, vae_stage, encode, mdnrnn_stage):
        stage.run(config, paths, progress=False)
    return config, paths


@pytest.mark.slow
def test_the_m_stage_trains_every_member_and_saves_an_ensemble_that_loads_as_one(trained_ensemble):
    config, paths = trained_ensemble
    model, checkpoint = load_mdnrnn(paths.mdnrnn)
    assert isinstance(model, MDNRNNEnsemble) and checkpoint["model_args"]["members"] == 3
    members = members_of(model)
    weights = [member.mixture_head.weight for member in members]
    assert not torch.equal(weights[0], weights[1]) and not torch.equal(weights[1], weights[2])
    z, actions = torch.randn(2, 5, model.z_size), torch.rand(2, 5, 1)
    torch.testing.assert_close(model(z, actions)[1], members[0](z, actions)[1])  # used as one M: the first member
    losses = [r["heldout/loss/total"] for r in MetricsLog(paths.metrics("mdnrnn")).read() if "heldout/loss/total" in r]
    assert losses[-1] < losses[0], "the members' mean held-out loss falls"


@pytest.mark.slow
def test_one_m_keeps_the_identity_it_had_before_ensembles(trained_ensemble):
    config, _ = trained_ensemble
    single = settings_that_matter(smoke_config())
    assert "ensemble" not in single and "latents" not in single  # nor did M's z, unless it is V's mean
    assert settings_that_matter(smoke_config("mdnrnn.latents=mean"))["latents"] == "mean"
    assert settings_that_matter(config)["ensemble"] == 3
