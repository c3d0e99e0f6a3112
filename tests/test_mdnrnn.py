import types

import numpy as np
import pytest
import torch
from torch import distributions

from tests.conftest import DEVICES, tolerance
from worldmodels.models.mdnrnn import (
    MDNRNN,
    MixturePrediction,
    mdn_loss,
    mixture_log_prob,
    mixture_noise,
    openloop_nll,
    sample_mixture,
    select_step,
)
from worldmodels.vmc.dream import DreamEnv


def _random_prediction(shape=(3, 4), z_size=5, mixtures=3, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.log_softmax(torch.randn(*shape, z_size, mixtures, generator=generator), dim=-1)
    means = torch.randn(*shape, z_size, mixtures, generator=generator) * 2
    log_stds = torch.randn(*shape, z_size, mixtures, generator=generator) * 0.5
    return MixturePrediction(logits, means, log_stds, torch.zeros(shape), torch.zeros(shape))


@pytest.mark.parametrize("device", DEVICES)
def test_mixture_log_likelihood_equals_torch_distributions(device):
    prediction = _random_prediction()
    prediction = MixturePrediction(*(getattr(prediction, name).to(device) for name in
                                     ("logits", "means", "log_stds", "reward", "done_logit")))
    target = (torch.randn(3, 4, 5) * 2).to(device)
    reference = distributions.MixtureSameFamily(
        distributions.Categorical(logits=prediction.logits),
        distributions.Normal(prediction.means, prediction.log_stds.exp())).log_prob(target)
    torch.testing.assert_close(mixture_log_prob(prediction, target), reference.sum(-1), rtol=1e-5, atol=1e-5)


def test_shared_mixture_log_likelihood_equals_torch_distributions():
    prediction = _random_prediction()
    prediction.logits = prediction.logits[..., :1, :]  # one set of weights for the whole z
    target = torch.randn(3, 4, 5) * 2
    components = distributions.Independent(
        distributions.Normal(prediction.means.transpose(-1, -2), prediction.log_stds.exp().transpose(-1, -2)), 1)
    reference = distributions.MixtureSameFamily(
        distributions.Categorical(logits=prediction.logits[..., 0, :]), components).log_prob(target)
    torch.testing.assert_close(mixture_log_prob(prediction, target), reference, rtol=1e-5, atol=1e-5)


def test_a_shared_mixture_draws_one_component_for_the_whole_z():
    count, z_size = 2000, 4
    means = torch.tensor([-10.0, 10.0]).expand(count, z_size, 2)
    prediction = MixturePrediction(torch.tensor([0.5, 0.5]).log().expand(count, 1, 2), means,
                                   torch.full((count, z_size, 2), -5.0), torch.zeros(count), torch.zeros(count))
    samples = sample_mixture(prediction, 1.0, mixture_noise((count, z_size), torch.Generator().manual_seed(4)))
    signs = samples.sign()
    assert bool((signs == signs[:, :1]).all()), "all dimensions of a draw come from one component"
    assert 0.4 < float((signs[:, 0] > 0).float().mean()) < 0.6


def test_as_temperature_goes_to_zero_samples_go_to_the_most_likely_mean():
    prediction = _random_prediction(shape=(200,))
    most_likely = prediction.means.gather(-1, prediction.logits.argmax(-1, keepdim=True)).squeeze(-1)
    cold = sample_mixture(prediction, 1e-6, mixture_noise(most_likely.shape, torch.Generator().manual_seed(1)))
    torch.testing.assert_close(cold, most_likely, atol=0.05, rtol=0)
    torch.testing.assert_close(sample_mixture(prediction, 0.0, None), most_likely)


def test_at_temperature_one_samples_have_the_mixtures_mean_and_variance():
    weights = torch.tensor([0.2, 0.5, 0.3])
    means = torch.tensor([-2.0, 0.5, 3.0])
    stds = torch.tensor([0.5, 1.0, 0.3])
    count = 200_000
    prediction = MixturePrediction(weights.log().expand(count, 1, 3), means.expand(count, 1, 3),
                                   stds.log().expand(count, 1, 3), torch.zeros(count), torch.zeros(count))
    samples = sample_mixture(prediction, 1.0, mixture_noise((count, 1), torch.Generator().manual_seed(2)))
    mean = float((weights * means).sum())
    variance = float((weights * (stds**2 + means**2)).sum()) - mean**2
    assert float(samples.mean()) == pytest.approx(mean, abs=0.02)
    assert float(samples.var()) == pytest.approx(variance, rel=0.02)


@pytest.mark.parametrize("mixture", ["per_dimension", "shared"])
def test_padded_steps_change_no_loss(mixture):
    torch.manual_seed(0)
    model = MDNRNN(z_size=4, action_size=2, hidden_size=16, mixtures=3, mixture=mixture)
    z, actions = torch.randn(2, 6, 4), torch.randn(2, 6, 2)
    next_z, rewards, dones = torch.randn(2, 6, 4), torch.randn(2, 6), torch.zeros(2, 6)
    mask = torch.ones(2, 6)
    mask[1, 4:] = 0  # the second sequence has 4 real steps
    losses = mdn_loss(model(z, actions)[0], next_z, rewards, dones, mask)
    for tensor in (z, actions, next_z):
        tensor[1, 4:] = float("nan") if tensor is next_z else 123.0
    rewards[1, 4:], dones[1, 4:] = float("nan"), 1.0
    padded = mdn_loss(model(z, actions)[0], next_z, rewards, dones, mask)
    for name in losses:
        assert torch.isfinite(padded[name])
        torch.testing.assert_close(padded[name], losses[name])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mixture", ["per_dimension", "shared"])
def test_one_batched_dream_step_equals_stepping_each_row_alone(mixture, device):
    torch.manual_seed(0)
    model = MDNRNN(z_size=4, action_size=1, hidden_size=16, mixtures=3, mixture=mixture).eval().to(device)
    starts_mu, starts_logvar = torch.randn(5, 4), torch.full((5, 4), -2.0)
    batched = DreamEnv(model, starts_mu, starts_logvar, temperature=1.0)
    batched.reset(5, starts=torch.arange(5))
    start_z = batched.z.clone()
    actions = torch.linspace(-1, 1, 5)[:, None]
    noise = mixture_noise((5, 4), torch.Generator().manual_seed(3))
    result = batched.step(actions, noise)
    for row in range(5):
        alone = DreamEnv(model, starts_mu, starts_logvar, temperature=1.0)
        alone.reset(1, starts=torch.tensor([row]))
        alone.z = start_z[row:row + 1].clone()
        single = alone.step(actions[row:row + 1], (noise[0][row:row + 1], noise[1][row:row + 1]))
        torch.testing.assert_close(single.z[0], result.z[row], **tolerance(device))
        torch.testing.assert_close(single.h[0], result.h[row], **tolerance(device))
        torch.testing.assert_close(single.reward[0], result.reward[row], **tolerance(device))
    assert result.z.device.type == device


def test_finished_dream_rollouts_stay_finished_and_earn_nothing():
    torch.manual_seed(0)
    model = MDNRNN(z_size=3, action_size=1, hidden_size=8, mixtures=2).eval()
    with torch.no_grad():
        model.reward_head.bias.fill_(1.0)
        model.reward_head.weight.zero_()
    dream = DreamEnv(model, torch.zeros(2, 3), torch.zeros(2, 3), max_steps=3)
    dream.reset(4)
    rewards = [dream.step(torch.zeros(4, 1)) for _ in range(5)]
    assert [bool(step.done.all()) for step in rewards] == [False, False, True, True, True]
    assert [float(step.reward.sum()) for step in rewards] == [4.0, 4.0, 4.0, 0.0, 0.0]
    z_after = rewards[3].z.clone()
    torch.testing.assert_close(rewards[4].z, z_after)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("mixture", ["per_dimension", "shared"])
def test_the_loss_falls_on_a_tiny_dataset(mixture, device):
    torch.manual_seed(0)
    steps = torch.arange(20, dtype=torch.float32)
    z = torch.stack([torch.sin(steps / 3 + phase) for phase in (0.0, 1.0, 2.0)], dim=-1)[None].repeat(4, 1, 1)
    z = (z + 0.01 * torch.randn_like(z)).to(device)
    actions = torch.zeros(4, 19, 1, device=device)
    model = MDNRNN(z_size=3, action_size=1, hidden_size=32, mixtures=2, mixture=mixture).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    mask = torch.ones(4, 19, device=device)
    zeros = torch.zeros(4, 19, device=device)
    history = []
    for _ in range(150):
        losses = mdn_loss(model(z[:, :-1], actions)[0], z[:, 1:], zeros, zeros, mask)
        optimizer.zero_grad()
        losses["total"].backward()
        torch.nn.utils.clip_grad_value_(model.parameters(), 1.0)
        optimizer.step()
        history.append(losses["z_nll"].item())
    assert np.mean(history[-20:]) < history[0] - 1.5, "z NLL must fall by nats, not a rounding error"


@pytest.mark.parametrize("mixture", ["per_dimension", "shared"])
def test_a_residual_m_predicts_the_change_of_z(mixture):
    """With the same weights, a residual M's means are the plain M's means plus the z read at that step
    (everything else equal); with its mixture head zeroed it predicts that z stays where it is."""
    torch.manual_seed(0)
    plain = MDNRNN(z_size=3, action_size=1, hidden_size=8, mixtures=2, mixture=mixture)
    residual = MDNRNN(z_size=3, action_size=1, hidden_size=8, mixtures=2, mixture=mixture, residual=True)
    residual.load_state_dict(plain.state_dict())
    z, actions = torch.randn(2, 5, 3), torch.randn(2, 5, 1)
    expected, got = plain(z, actions)[0], residual(z, actions)[0]
    torch.testing.assert_close(got.means, expected.means + z[..., None])
    for name in ("logits", "log_stds", "reward", "done_logit"):
        torch.testing.assert_close(getattr(got, name), getattr(expected, name))
    with torch.no_grad():
        residual.mixture_head.weight.zero_()
        residual.mixture_head.bias.zero_()
    still = residual(z, actions)[0]
    torch.testing.assert_close(still.means, z[..., None].expand(-1, -1, -1, 2))
    torch.testing.assert_close(sample_mixture(select_step(still, 4), 0.0, mixture_noise(z[:, 4].shape)), z[:, 4])


def test_select_step_picks_one_time_step():
    prediction = _random_prediction(shape=(2, 3))
    picked = select_step(prediction, 1)
    torch.testing.assert_close(picked.means, prediction.means[:, 1])
    assert np.array_equal(picked.logits.shape, (2, 5, 3))


def test_the_first_open_loop_step_is_the_one_step_loss_and_later_steps_read_predictions():
    torch.manual_seed(0)
    model = MDNRNN(z_size=3, action_size=1, hidden_size=8, mixtures=2)
    z, actions, mask = torch.randn(2, 7, 3), torch.randn(2, 6, 1), torch.ones(2, 6)
    with torch.no_grad():
        one_step = -mixture_log_prob(select_step(model(z[:, :-1], actions)[0], 3), z[:, 4]).mean() / 3
        torch.testing.assert_close(openloop_nll(model, z, actions, mask, start=3, steps=1), one_step)

        def later_steps(latents):  # summed NLL of offsets 1 and 2 (targets z[:, 5], z[:, 6])
            return 3 * openloop_nll(model, latents, actions, mask, 3, 3) - openloop_nll(model, latents, actions,
                                                                                       mask, 3, 1)

        changed = z.clone()
        changed[:, 4] += 5.0  # after the start, z[:, 4] is only a target, never an input
        torch.testing.assert_close(later_steps(changed), later_steps(z))
        teacher_forced = model(changed[:, :-1], actions)[0].means[:, 5]
        assert not torch.allclose(teacher_forced, model(z[:, :-1], actions)[0].means[:, 5])


def test_a_policy_in_the_dream_scores_what_the_populations_loop_gives_the_same_controller():
    """policy_dream_returns with a linear C written as a function of (z, h) equals population_returns
    of its flat vector on the same dreams (one seed: the same starts and draws, the same rows finishing)."""
    from worldmodels.models.controller import LinearController
    from worldmodels.vmc.dream import population_returns
    from worldmodels.vmc.simulator import policy_dream_returns

    torch.manual_seed(0)
    model = MDNRNN(z_size=4, action_size=1, hidden_size=8, mixtures=2).eval()
    with torch.no_grad():
        model.done_head.bias.fill_(-1.0)  # some rollouts end early: the shrinking batch is exercised
    controller = LinearController(4, 8, 1)
    mu, logvar = torch.randn(6, 4), torch.full((6, 4), -1.0)

    def dream():
        return DreamEnv(model, mu, logvar, temperature=1.0, max_steps=12, generator=torch.Generator().manual_seed(5))

    with torch.no_grad():
        returns = policy_dream_returns(dream(), lambda z, h: controller(z, h), 10)
    flat = controller.get_flat()[None].expand(10, -1)
    expected = population_returns(dream(), flat, 1, 1)
    torch.testing.assert_close(returns, expected)
    assert returns.std() > 0, "the rollouts differ: the dream is random and some end early"


def test_the_dream_of_doing_nothing_is_placed_on_the_noise_curve_in_log_std():
    from worldmodels.vmc.simulator import describe_zero_action_noise, noise_equivalent

    stds, returns = [0.01, 0.1, 1.0], [700.0, 500.0, 300.0]
    # 600 is halfway from 700 to 500: halfway from log 0.01 to log 0.1.
    assert noise_equivalent(stds, returns, 750.0, 600.0) == {"std": pytest.approx(10 ** -1.5), "bound": "at"}
    assert noise_equivalent(stds, returns, 750.0, 400.0) == {"std": pytest.approx(10 ** -0.5), "bound": "at"}
    assert noise_equivalent(stds, returns, 750.0, 720.0) == {"std": 0.01, "bound": "below"}
    assert noise_equivalent(stds, returns, 750.0, 250.0) == {"std": 1.0, "bound": "above"}
    assert noise_equivalent(stds, returns, 750.0, 800.0) == {"std": None, "bound": "over"}
    # A curve that is not monotone (few episodes): the first bracketing pair is used.
    bumpy = noise_equivalent([0.01, 0.1, 1.0, 10.0], [700.0, 500.0, 520.0, 300.0], 750.0, 510.0)
    assert bumpy == {"std": pytest.approx(10 ** (-2 + 0.95)), "bound": "at"}
    held = {"actions": [-1.0, 0.0, 1.0], "dream_return_mean": [100.0, 600.0, 100.0],
            "zero_action_noise": {"stds": stds, "real_return_mean": returns,
                                  "dream_as_noise": noise_equivalent(stds, returns, 750.0, 600.0)}}
    assert describe_zero_action_noise(held) == ("real zero action with action noise 0.01 / 0.1 / 1: 700 / 500 / "
                                                "300; M's dream of doing nothing (600) is as if the real one had "
                                                "action noise of std 0.0316")
    # A dream that pays doing nothing more than reality (TakeCover's exploit) has no std to print.
    over = held | {"dream_return_mean": [100.0, 800.0, 100.0],
                   "zero_action_noise": held["zero_action_noise"] | {
                       "dream_as_noise": noise_equivalent(stds, returns, 750.0, 800.0)}}
    assert describe_zero_action_noise(over).endswith("(800) is above the real one: no action noise explains it")


def test_a_held_action_episode_plays_the_seeded_noise_around_the_held_value():
    from worldmodels.vmc.m_probes import held_action_episode

    class Echo:  # rewards each step with the action it was given
        action_size = 1

        def reset(self, seed):
            return np.zeros((2, 2, 3), np.uint8)

        def step(self, action):
            return types.SimpleNamespace(reward=float(action[0]), frame=np.zeros((2, 2, 3), np.uint8),
                                         terminated=False, truncated=False)

    _, exact = held_action_episode(Echo(), 0, 0.5, 2000)
    assert np.all(exact == 0.5)
    _, noisy = held_action_episode(Echo(), 0, 0.5, 2000, noise_std=0.1, noise_seed=3)
    assert noisy.mean() == pytest.approx(0.5, abs=0.01) and noisy.std() == pytest.approx(0.1, rel=0.05)
    np.testing.assert_array_equal(held_action_episode(Echo(), 0, 0.5, 2000, noise_std=0.1, noise_seed=3)[1], noisy)
    assert not np.array_equal(held_action_episode(Echo(), 0, 0.5, 2000, noise_std=0.1, noise_seed=4)[1], noisy)
    _, clipped = held_action_episode(Echo(), 0, 0.95, 2000, noise_std=0.5, noise_seed=3)
    assert clipped.max() == 1.0 and clipped.min() >= -1.0


def test_the_cosine_rate_falls_from_the_rate_to_zero_over_the_run_and_constant_stays():
    from worldmodels.config import MDNRNNConfig
    from worldmodels.vmc.m_training import scheduled_learning_rate

    settings = MDNRNNConfig(epochs=4, learning_rate=0.002, learning_rate_schedule="cosine")
    assert scheduled_learning_rate(settings, 1, 1, 10) == pytest.approx(0.002)
    assert scheduled_learning_rate(settings, 3, 1, 10) == pytest.approx(0.001)  # half the batches done
    assert scheduled_learning_rate(settings, 2, 1, 10) == pytest.approx(0.001 * (1 + np.cos(np.pi / 4)))
    assert scheduled_learning_rate(settings, 4, 10, 10) == pytest.approx(0.001 * (1 + np.cos(np.pi * 39 / 40)))


def test_the_schedule_is_part_of_a_runs_identity_only_when_it_is_cosine():
    from worldmodels.config import load_pipeline
    from worldmodels.vmc.m_training import settings_that_matter

    constant = settings_that_matter(load_pipeline("smoke"))
    assert "learning_rate_schedule" not in constant and "epochs" not in constant  # older runs resume as they were
    cosine = settings_that_matter(load_pipeline("smoke", ["mdnrnn.learning_rate_schedule=cosine", "mdnrnn.epochs=7"]))
    assert cosine == constant | {"learning_rate_schedule": "cosine", "epochs": 7}
