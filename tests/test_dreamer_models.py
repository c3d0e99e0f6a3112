import numpy as np
import pytest
import torch

from tests.conftest import DEVICES
from worldmodels.models.actor_critic import Actor, Value, behaviour_losses, lambda_returns
from worldmodels.models.rssm import State, WorldModel, kl_with_free_nats, openloop_prediction, world_model_losses


def _small_model(action_size=1):
    torch.manual_seed(0)
    return WorldModel(action_size, depth=4, deter_size=16, stoch_size=4, hidden_size=16, reward_hidden=16)


def test_lambda_returns_match_a_hand_computed_example():
    rewards = torch.tensor([[1.0], [2.0], [3.0]])
    values = torch.tensor([[10.0], [20.0], [30.0]])
    bootstrap = torch.tensor([40.0])
    gamma, lam = 0.9, 0.5
    r3 = 3 + gamma * ((1 - lam) * 40 + lam * 40)
    r2 = 2 + gamma * ((1 - lam) * 30 + lam * r3)
    r1 = 1 + gamma * ((1 - lam) * 20 + lam * r2)
    result = lambda_returns(rewards, values, bootstrap, gamma, lam)
    np.testing.assert_allclose(result[:, 0].numpy(), [r1, r2, r3], rtol=1e-6)
    # lambda = 1: discounted Monte Carlo with the bootstrap; lambda = 0: one-step TD targets.
    np.testing.assert_allclose(lambda_returns(rewards, values, bootstrap, gamma, 1.0)[0, 0].item(),
                               1 + gamma * 2 + gamma ** 2 * 3 + gamma ** 3 * 40, rtol=1e-6)
    np.testing.assert_allclose(lambda_returns(rewards, values, bootstrap, gamma, 0.0)[:, 0].numpy(),
                               [1 + gamma * 20, 2 + gamma * 30, 3 + gamma * 40], rtol=1e-6)


def test_free_nats_floor_the_kl_and_cut_its_gradient_below_it():
    mean = torch.zeros(2, 3, 4, requires_grad=True)
    posterior = State(torch.zeros(2, 3, 1), torch.zeros(2, 3, 4), mean, torch.ones(2, 3, 4))
    prior = State(torch.zeros(2, 3, 1), torch.zeros(2, 3, 4), torch.full((2, 3, 4), 0.5), torch.ones(2, 3, 4))
    loss, kl = kl_with_free_nats(posterior, prior, free_nats=3.0)
    assert kl.item() == pytest.approx(4 * 0.5 * 0.25)  # 4 dims of (0.5)^2 / 2
    assert loss.item() == 3.0
    loss.backward()
    assert mean.grad.abs().sum() == 0
    loss, kl = kl_with_free_nats(posterior, prior, free_nats=0.1)
    assert loss.item() == pytest.approx(kl.item()) and loss.requires_grad


def test_kl_balancing_splits_the_gradient_between_prior_and_posterior_as_computed_by_hand():
    # One state dimension: q = N(m_q, s_q), p = N(m_p, s_p).
    # KL(q || p) = log(s_p / s_q) + (s_q^2 + (m_q - m_p)^2) / (2 s_p^2) - 1/2, and by hand
    # dKL/dm_q = (m_q - m_p) / s_p^2, dKL/dm_p = -(m_q - m_p) / s_p^2.
    m_q, s_q, m_p, s_p = 0.7, 0.5, -0.3, 1.5
    kl_by_hand = np.log(s_p / s_q) + (s_q ** 2 + (m_q - m_p) ** 2) / (2 * s_p ** 2) - 0.5
    d_mq, d_mp = (m_q - m_p) / s_p ** 2, -(m_q - m_p) / s_p ** 2

    def gradients(balance, free_nats, floor_prior=True):
        mean_q, mean_p = torch.tensor([[m_q]], requires_grad=True), torch.tensor([[m_p]], requires_grad=True)
        zeros = torch.zeros(1, 1)
        posterior = State(zeros, zeros, mean_q, torch.tensor([[s_q]]))
        prior = State(zeros, zeros, mean_p, torch.tensor([[s_p]]))
        loss, kl = kl_with_free_nats(posterior, prior, free_nats, balance, floor_prior)
        loss.backward()
        return loss.item(), kl.item(), mean_q.grad.item(), mean_p.grad.item()

    loss, kl, grad_q, grad_p = gradients(0.8, 0.0)
    assert kl == pytest.approx(kl_by_hand) and loss == pytest.approx(kl_by_hand)
    assert grad_q == pytest.approx(0.2 * d_mq) and grad_p == pytest.approx(0.8 * d_mp)
    # 0.5 is Dreamer v1's plain KL: the whole gradient to both sides (the balanced form would halve it).
    loss, _, grad_q, grad_p = gradients(0.5, 0.0)
    assert loss == pytest.approx(kl_by_hand) and grad_q == pytest.approx(d_mq) and grad_p == pytest.approx(d_mp)
    # Without the floor on the prior's term, 0.5 is the balanced form: half the gradient to each side.
    _, _, grad_q, grad_p = gradients(0.5, 0.0, floor_prior=False)
    assert grad_q == pytest.approx(0.5 * d_mq) and grad_p == pytest.approx(0.5 * d_mp)
    # Free nats above the KL: the loss is the floor and carries no gradient, on either side.
    loss, _, grad_q, grad_p = gradients(0.8, 1.0)
    assert kl_by_hand < 1.0 and loss == pytest.approx(1.0) and grad_q == 0 and grad_p == 0
    # The floor on the posterior's term alone: the prior still learns below it.
    loss, _, grad_q, grad_p = gradients(0.8, 1.0, floor_prior=False)
    assert loss == pytest.approx(0.2 * 1.0 + 0.8 * kl_by_hand) and grad_q == 0 and grad_p == pytest.approx(0.8 * d_mp)


def test_actor_gradient_reaches_the_actor_and_leaves_the_world_model_unchanged():
    model = _small_model()
    actor, value = Actor(model.rssm.feature_size, 1, hidden=16), Value(model.rssm.feature_size, hidden=16)
    frames = torch.randint(0, 255, (2, 5, 64, 64, 3), dtype=torch.uint8)
    _, posterior = world_model_losses(model, frames, torch.rand(2, 4, 1) * 2 - 1, torch.rand(2, 4), 3.0)
    losses = behaviour_losses(model, actor, value, posterior, horizon=5, discount=0.99, lambda_=0.95)
    losses["actor"].backward()
    assert all(p.grad is None for p in model.parameters()), "the world model gets no gradient from the actor"
    assert all(p.grad is None for p in value.parameters())
    assert sum(p.grad.abs().sum() for p in actor.parameters()) > 0
    assert all(p.requires_grad for p in model.parameters()), "freezing is undone after imagining"
    losses["value"].backward()
    assert sum(p.grad.abs().sum() for p in value.parameters()) > 0


def test_openloop_prediction_reads_only_the_context_frames():
    model = _small_model().eval()
    frames = torch.randint(0, 255, (2, 11, 64, 64, 3), dtype=torch.uint8)
    actions = torch.rand(2, 10, 1) * 2 - 1
    images, rewards = openloop_prediction(model, frames, actions, context=3)
    assert images.shape == (2, 8, 3, 64, 64) and rewards.shape == (2, 8)
    changed = frames.clone()
    changed[:, 3:] = 255 - changed[:, 3:]
    again, _ = openloop_prediction(model, changed, actions, context=3)
    torch.testing.assert_close(images, again)
    changed[:, 2] = 0
    assert not torch.allclose(openloop_prediction(model, changed, actions, context=3)[0], images)


@pytest.mark.parametrize("device", DEVICES)
def test_world_model_loss_falls_on_a_fixed_batch(device):
    model = _small_model().to(device)
    # Each frame one flat grey level: learnable in a few steps, unlike noise.
    frames = torch.randint(0, 255, (4, 6, 1, 1, 1), dtype=torch.uint8).expand(4, 6, 64, 64, 3).contiguous()
    actions, rewards = torch.rand(4, 5, 1) * 2 - 1, torch.rand(4, 5)
    frames, actions, rewards = frames.to(device), actions.to(device), rewards.to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(60):
        losses, _ = world_model_losses(model, frames, actions, rewards, free_nats=3.0)
        first = first if first is not None else losses["total"].item()
        optimizer.zero_grad()
        losses["total"].backward()
        optimizer.step()
    assert losses["total"].item() < 0.5 * first


def test_batched_observe_equals_the_step_by_step_reference():
    model = _small_model()
    embeds, actions = torch.randn(3, 7, model.encoder.output_size), torch.rand(3, 7, 1)
    noise = torch.randn(3, 7, model.rssm.stoch_size)
    fast = model.rssm.observe(embeds, actions, noise=noise)
    slow = model.rssm.observe_stepwise(embeds, actions, noise)
    for got, want in zip(fast, slow, strict=True):
        for name in ("deter", "stoch", "mean", "std"):
            torch.testing.assert_close(getattr(got, name), getattr(want, name), rtol=1e-5, atol=1e-5)


def test_fast_encoder_and_decoder_compute_the_plain_ones_function():
    model = _small_model()
    features = torch.randn(5, model.rssm.feature_size)
    images = torch.rand(5, 3, 64, 64) - 0.5
    fast_out, fast_embed = model.decoder(features), model.encoder(images)
    model.decoder.fast = model.encoder.fast = False
    torch.testing.assert_close(model.decoder(features), fast_out, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.encoder(images), fast_embed, rtol=1e-4, atol=1e-5)


def test_the_tanh_normal_log_density_matches_torchs_transformed_distribution_and_stays_finite_when_saturated():
    torch.manual_seed(0)
    actor = Actor(8, 2, hidden=16, layers=2)
    features = torch.randn(64, 8)
    actions, log_prob = actor.sample_with_log_prob(features)
    normal = actor._normal(features)
    squashed = torch.distributions.TransformedDistribution(normal, [torch.distributions.TanhTransform()])
    inside = actions.abs().amax(-1) < 0.999  # torch's version loses precision next to +-1
    assert inside.sum() > 10
    torch.testing.assert_close(log_prob[inside], squashed.log_prob(actions).sum(-1)[inside], rtol=1e-4, atol=1e-4)
    # A wide actor saturates its samples: tanh(x) is exactly +-1 in fp32, where log(1 - tanh(x)^2) would be
    # -inf, yet the log-density stays finite.
    with torch.no_grad():
        actor.net[-1].bias[2:] = 50.0  # the std's raw outputs (the second half): std ~ 55
    actions, log_prob = actor.sample_with_log_prob(features)
    assert (actions.abs() == 1.0).any() and torch.isfinite(log_prob).all()


def test_the_entropy_bonus_lowers_the_actor_loss_by_its_scale_times_the_entropy():
    model = _small_model()
    actor, value = Actor(model.rssm.feature_size, 1, hidden=16), Value(model.rssm.feature_size, hidden=16)
    frames = torch.randint(0, 255, (2, 5, 64, 64, 3), dtype=torch.uint8)
    _, posterior = world_model_losses(model, frames, torch.rand(2, 4, 1) * 2 - 1, torch.rand(2, 4), 3.0)
    torch.manual_seed(5)
    plain = behaviour_losses(model, actor, value, posterior, horizon=4, discount=0.99, lambda_=0.95)
    torch.manual_seed(5)
    bonus = behaviour_losses(model, actor, value, posterior, horizon=4, discount=0.99, lambda_=0.95,
                             entropy_scale=0.1)
    assert plain["entropy"].item() == 0 and bonus["entropy"].item() != 0
    assert bonus["actor"].item() == pytest.approx(plain["actor"].item() - 0.1 * bonus["entropy"].item(), rel=1e-5)


def test_warmup_updates_leave_the_actor_and_the_value_untouched_as_asked():
    from worldmodels.config import DreamerConfig
    from worldmodels.core.runtime import Runtime
    from worldmodels.dreamer.learner import Dreamer, update

    settings = DreamerConfig(depth=4, deter_size=16, stoch_size=4, hidden_size=16, head_hidden=16, batch_size=2,
                             sequence_length=4, horizon=3)
    dreamer = Dreamer.build(1, settings)
    before = {name: [p.clone() for p in module.parameters()] for name, module in dreamer.modules().items()}
    batch = {"frames": torch.randint(0, 255, (2, 5, 64, 64, 3), dtype=torch.uint8),
             "actions": torch.rand(2, 4, 1) * 2 - 1, "rewards": torch.rand(2, 4)}
    runtime = Runtime(torch.device("cpu"), "fp32", 1, why="test")
    metrics = update(dreamer, batch, settings, runtime, behaviour=False)
    assert "train/loss/actor" not in metrics

    def changed(name):
        after = dreamer.modules()[name].parameters()
        return any(not torch.equal(a, b) for a, b in zip(before[name], after, strict=True))
    assert changed("world_model") and not changed("actor") and not changed("value")
    update(dreamer, batch, settings, runtime, actor=False)  # the value's warm-up
    assert changed("value") and not changed("actor")
    update(dreamer, batch, settings, runtime)
    assert changed("actor")


def test_imagined_returns_are_fp32_under_bf16_autocast():
    model = _small_model()
    actor, value = Actor(model.rssm.feature_size, 1, hidden=16), Value(model.rssm.feature_size, hidden=16)
    frames = torch.randint(0, 255, (2, 5, 64, 64, 3), dtype=torch.uint8)
    _, posterior = world_model_losses(model, frames, torch.rand(2, 4, 1) * 2 - 1, torch.rand(2, 4), 3.0)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        losses = behaviour_losses(model, actor, value, posterior, horizon=4, discount=0.99, lambda_=0.95)
    assert losses["imagined_return"].dtype == torch.float32 and losses["value"].dtype == torch.float32
    assert losses["actor"].dtype == torch.float32
