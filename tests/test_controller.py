import numpy as np
import pytest
import torch

from worldmodels.core.es import CMAES
from worldmodels.models.controller import LinearController, memory_step_scales, population_actions
from worldmodels.models.mdnrnn import MDNRNN
from worldmodels.vmc.dream import DreamEnv, population_returns
from worldmodels.vmc.simulator import held_action_dream, replay_returns


@pytest.mark.parametrize("inputs, expected", [("zh", (32 + 256) * 3 + 3), ("z", 32 * 3 + 3), ("zz", 64 * 3 + 3)])
def test_controller_sizes_follow_the_paper(inputs, expected):
    assert LinearController(32, 256, 3, inputs).num_parameters == expected  # 867 for CarRacing with [z, h]


def test_the_doom_controller_reads_z_c_h_without_bias():
    controller = LinearController(64, 512, 1, "zch", bias=False)
    assert controller.num_parameters == 1088  # the paper's Doom C
    torch.manual_seed(0)
    vector = torch.randn(1088) * 0.05
    controller.set_flat(vector)
    z, c, h = torch.randn(4, 64), torch.randn(4, 512), torch.randn(4, 512)
    expected = torch.tanh(torch.cat([z, c, h], dim=1) @ vector[:, None])
    torch.testing.assert_close(controller(z, h, c), expected)
    torch.testing.assert_close(population_actions(vector.expand(4, -1), z, h, 1, "zch", c), expected)
    with pytest.raises(ValueError, match="need M's LSTM cell state c"):
        controller(z, h)
    with pytest.raises(ValueError, match="expected 1088 \\(no bias\\) or 1089 parameters"):
        population_actions(torch.zeros(4, 5), z, h, 1, "zch", c)


def test_the_two_frame_controller_reads_z_and_the_previous_z():
    controller = LinearController(3, 5, 1, "zz")
    assert controller.num_parameters == 7
    vector = torch.tensor([0.1, -0.2, 0.3, -0.4, 0.5, -0.6, 0.05])
    controller.set_flat(vector)
    z, previous = torch.tensor([[1.0, 2.0, 3.0]]), torch.tensor([[0.5, 0.0, -1.0]])
    # by hand: 0.1 - 0.4 + 0.9 - 0.2 + 0 + 0.6 + 0.05 = 1.05
    expected = torch.tanh(torch.tensor([[1.05]]))
    torch.testing.assert_close(controller(z, torch.zeros(1, 5), None, previous), expected)
    population = population_actions(vector[None], z, torch.zeros(1, 5), 1, "zz", None, previous)
    torch.testing.assert_close(population, expected)
    with pytest.raises(ValueError, match="need the previous step's z"):
        controller(z, torch.zeros(1, 5))


def _reward_varying_model() -> MDNRNN:
    """A small M whose dreams end at different steps and whose rewards follow h (so the actions)."""
    torch.manual_seed(4)
    model = MDNRNN(z_size=4, action_size=1, hidden_size=8, mixtures=2).eval()
    with torch.no_grad():
        model.done_head.weight.mul_(20)
    return model


def test_a_two_frame_c_reads_in_the_dream_the_z_it_read_the_step_before():
    """population_returns with ``zz`` equals a full-batch loop that hands C the z of the step before
    (the start itself on the first step), and differs from one that hands it the current z twice."""
    model = _reward_varying_model()
    rows, steps = 12, 15
    generator = torch.Generator().manual_seed(2)
    start_mu = torch.randn(4, 4)
    starts, start_noise = torch.randint(4, (rows,), generator=generator), torch.randn(rows, 4, generator=generator)
    uniform, normal = torch.rand(steps, rows, 4, generator=generator), torch.randn(steps, rows, 4, generator=generator)
    parameters = torch.randn(3, LinearController(4, 8, 1, "zz").num_parameters, generator=generator) * 2

    def dream():
        return DreamEnv(model, start_mu, torch.zeros(4, 4), max_steps=steps)

    batched = population_returns(dream(), parameters, 4, 1, "zz", starts=starts, start_noise=start_noise,
                                 step_noise=lambda t: (uniform[t], normal[t]))

    def loop(previous_of):
        full = dream()
        z = full.reset(rows, starts=starts, noise=start_noise)
        flat, total, previous = parameters.repeat_interleave(4, dim=0), torch.zeros(rows), z
        for t in range(steps):
            actions = population_actions(flat, z, full.h, 1, "zz", full.c, previous_of(previous, z))
            result = full.step(actions, (uniform[t], normal[t]))
            total += result.reward
            previous, z = z, result.z
        return total.view(3, 4).mean(dim=1)

    torch.testing.assert_close(batched, loop(lambda previous, z: previous))
    assert (batched - loop(lambda previous, z: z)).abs().max() > 1e-3, "the test must tell the two apart"


def test_flat_vector_round_trip_and_population_form_agree():
    torch.manual_seed(0)
    controller = LinearController(4, 6, 2)
    vector = torch.randn(controller.num_parameters)
    controller.set_flat(vector)
    torch.testing.assert_close(controller.get_flat(), vector)
    z, h = torch.randn(5, 4), torch.randn(5, 6)
    expected = controller(z, h)
    torch.testing.assert_close(population_actions(vector.expand(5, -1), z, h, 2), expected)
    with pytest.raises(ValueError, match="expected 22 parameters"):
        controller.set_flat(torch.zeros(3))


def test_cma_es_finds_the_minimum_of_a_quadratic():
    target = np.array([1.5, -2.0, 0.5, 3.0])
    strategy = CMAES(4, sigma0=1.0, popsize=16, seed=0)
    for _ in range(80):
        population = strategy.ask()
        strategy.tell(population, -((population - target) ** 2).sum(axis=1))
    np.testing.assert_allclose(strategy.mean, target, atol=1e-3)


def test_a_resumed_cma_es_continues_with_the_same_state():
    def fitness(population):
        return -(population ** 2).sum(axis=1)

    straight = CMAES(3, 0.5, 8, seed=1)
    for _ in range(5):
        population = straight.ask()
        straight.tell(population, fitness(population))
    saved = straight.state()
    expected = straight.ask()
    resumed = CMAES.from_state(saved)
    assert resumed.generation == 5
    np.testing.assert_array_equal(resumed.ask(), expected)


def test_a_cma_es_state_saved_before_the_module_moved_still_resumes(monkeypatch):
    """A search stopped when CMA-ES lived in ``worldmodels.es`` resumes now that it is ``worldmodels.core.es``."""
    import sys

    from worldmodels.core import es

    strategy = CMAES(3, 0.5, 8, seed=1)
    strategy.tell(strategy.ask(), np.arange(8.0))
    monkeypatch.setattr(CMAES, "__module__", "worldmodels.es")
    monkeypatch.setitem(sys.modules, "worldmodels.es", es)
    saved = strategy.state()  # pickled under the old module path
    monkeypatch.undo()
    assert b"worldmodels.es" in saved and b"worldmodels.core.es" not in saved
    expected = strategy.ask()
    resumed = CMAES.from_state(saved)
    assert resumed.generation == 1
    np.testing.assert_array_equal(resumed.ask(), expected)


def test_batched_population_fitness_equals_candidate_by_candidate():
    torch.manual_seed(0)
    model = MDNRNN(z_size=4, action_size=1, hidden_size=8, mixtures=2).eval()
    start_mu, start_logvar = torch.randn(3, 4), torch.full((3, 4), -1.0)
    candidates, rollouts, steps = 3, 2, 6
    parameters = torch.randn(candidates, LinearController(4, 8, 1).num_parameters) * 0.5
    generator = torch.Generator().manual_seed(5)
    rows = candidates * rollouts
    starts = torch.randint(3, (rows,), generator=generator)
    start_noise = torch.randn(rows, 4, generator=generator)
    uniform, normal = torch.rand(steps, rows, 4, generator=generator), torch.randn(steps, rows, 4, generator=generator)

    def dream():
        return DreamEnv(model, start_mu, start_logvar, temperature=1.0, max_steps=steps)

    batched = population_returns(dream(), parameters, rollouts, 1, starts=starts, start_noise=start_noise,
                                 step_noise=lambda t: (uniform[t], normal[t]))
    for candidate in range(candidates):
        part = slice(candidate * rollouts, (candidate + 1) * rollouts)
        alone = population_returns(dream(), parameters[candidate:candidate + 1], rollouts, 1, starts=starts[part],
                                   start_noise=start_noise[part],
                                   step_noise=lambda t, part=part: (uniform[t][part], normal[t][part]))
        torch.testing.assert_close(alone[0], batched[candidate], rtol=1e-5, atol=1e-5)
    assert len(set(batched.tolist())) == candidates, "different controllers must score differently"


def test_cmaes_starts_from_the_given_mean():
    start = np.array([0.5, -1.0, 2.0])
    strategy = CMAES(3, 0.01, 8, seed=0, x0=start)
    np.testing.assert_array_equal(strategy.mean, start)
    assert np.abs(strategy.ask() - start).max() < 0.1


def _survival_model(done_bias: float) -> MDNRNN:
    """A small M whose done head says p(done) = sigmoid(w . h + done_bias)."""
    torch.manual_seed(3)
    model = MDNRNN(z_size=4, action_size=1, hidden_size=8, mixtures=2).eval()
    with torch.no_grad():
        model.done_head.bias.fill_(done_bias)
        model.reward_head.bias.fill_(-5.0)  # far from the survival reward of 1
    return model


@pytest.mark.parametrize("done_bias, expected", [(20.0, 1.0), (-20.0, 7.0)])
def test_the_survival_dream_pays_one_per_step_until_the_done_head_ends_it(done_bias, expected):
    dream = DreamEnv(_survival_model(done_bias), torch.randn(3, 4), torch.zeros(3, 4), max_steps=7, reward="survival")
    parameters = torch.zeros(2, LinearController(4, 8, 1, "zch", bias=False).num_parameters)
    returns = population_returns(dream, parameters, 5, 1, "zch")
    torch.testing.assert_close(returns, torch.full((2,), expected))


def test_finished_dreams_leave_the_batch_without_changing_any_return():
    """Each row's return equals the one of a full-batch loop where finished rows stay in the batch."""
    model = _survival_model(0.0)
    with torch.no_grad():
        model.done_head.weight.mul_(20)  # rows die at different steps
    rows, steps = 12, 15
    generator = torch.Generator().manual_seed(2)
    start_mu = torch.randn(4, 4)
    starts, start_noise = torch.randint(4, (rows,), generator=generator), torch.randn(rows, 4, generator=generator)
    uniform, normal = torch.rand(steps, rows, 4, generator=generator), torch.randn(steps, rows, 4, generator=generator)
    parameters = torch.randn(3, LinearController(4, 8, 1, "zch").num_parameters, generator=generator)

    def dream():
        return DreamEnv(model, start_mu, torch.zeros(4, 4), max_steps=steps, reward="survival")

    compacting = dream()
    compacted = population_returns(compacting, parameters, 4, 1, "zch", starts=starts, start_noise=start_noise,
                                   step_noise=lambda t: (uniform[t], normal[t]))
    full = dream()
    z = full.reset(rows, starts=starts, noise=start_noise)
    flat, total = parameters.repeat_interleave(4, dim=0), torch.zeros(rows)
    for t in range(steps):
        result = full.step(population_actions(flat, z, full.h, 1, "zch", full.c), (uniform[t], normal[t]))
        total += result.reward
        z = result.z
    torch.testing.assert_close(compacted, total.view(3, 4).mean(dim=1))
    assert compacting.rows_stepped == int(total.sum()) < rows * steps  # each row stepped only while it ran
    lengths = set(total.tolist())
    assert len(lengths) > 2 and min(lengths) < steps, f"the test needs rows that end at different steps: {lengths}"


def test_a_held_action_dream_is_the_replay_of_that_action_until_the_done_head_ends_it():
    """Never done: each held value's dream is the replay of an action sequence of that value (the same
    draws, computed by another loop), its per-step rewards add up to its return, and the values differ
    (M reads the action). Always done: one step, which survival pays 1, and nothing after it."""
    model = _survival_model(-20.0)
    with torch.no_grad():
        model.reward_head.weight.normal_(0, 1.0, generator=torch.Generator().manual_seed(1))
    start_mu, start_logvar = torch.randn(3, 4), torch.full((3, 4), -2.0)
    returns = {}
    for value in (-1.0, 1.0):
        held = held_action_dream(model, start_mu, start_logvar, (value,), 1.0, 5, 9, "model", seed=4)
        replayed = replay_returns(model, start_mu, start_logvar, torch.full((3, 9, 1), value), 1.0, 5, seed=4)
        torch.testing.assert_close(held.returns[0], replayed.mean(1))
        torch.testing.assert_close(held.lengths, torch.full((1, 3), 9.0))
        assert held.step_rewards.shape == (1, 3, 9)
        torch.testing.assert_close(held.step_rewards.sum(-1), held.returns)
        assert bool((held.step_rewards.std(-1) > 1e-4).all()), "M's reward varies along a dream"
        returns[value] = held.returns[0]
    assert (returns[-1.0] - returns[1.0]).abs().min() > 1e-3
    ended = held_action_dream(_survival_model(20.0), start_mu, start_logvar, (0.0, 1.0), 1.0, 2, 9, "survival",
                              seed=0)
    torch.testing.assert_close(ended.returns, torch.ones(2, 3))
    torch.testing.assert_close(ended.lengths, torch.ones(2, 3))
    torch.testing.assert_close(ended.step_rewards, torch.cat([torch.ones(2, 3, 1), torch.zeros(2, 3, 8)], dim=-1))


def test_a_replay_of_episodes_of_different_lengths_scores_each_up_to_its_own_end():
    """Scored with ``lengths``, each episode's replay return is the one of a replay cut at its length
    (the same draws: a shorter loop over the same batch)."""
    model = _survival_model(-20.0)
    with torch.no_grad():
        model.reward_head.bias.fill_(1.0)
    start_mu, start_logvar = torch.randn(3, 4), torch.full((3, 4), -2.0)
    actions = torch.rand(3, 9, 1, generator=torch.Generator().manual_seed(5)) * 2 - 1
    scored = replay_returns(model, start_mu, start_logvar, actions, 1.0, 4, seed=2, lengths=torch.tensor([9, 4, 1]))
    for row, length in enumerate((9, 4, 1)):
        cut = replay_returns(model, start_mu, start_logvar, actions[:, :length], 1.0, 4, seed=2)
        torch.testing.assert_close(scored[row], cut[row])
    whole = replay_returns(model, start_mu, start_logvar, actions, 1.0, 4, seed=2)
    assert (whole[1:] - scored[1:]).abs().min() > 1e-3, "the shorter episodes' later steps are not counted"


@pytest.mark.parametrize("inputs, memory_units", [("zh", 3), ("zch", 6)])
def test_memory_step_scales_mark_the_weights_of_m_s_memory(inputs, memory_units):
    controller = LinearController(z_size=2, hidden_size=3, action_size=2, inputs=inputs)
    scales = memory_step_scales(2, 3, 2, inputs, bias=True, memory_scale=0.01)
    assert scales.shape == (controller.num_parameters,)
    row = [1.0, 1.0] + [0.01] * memory_units  # z's weights first, then c's and h's (controller_features)
    np.testing.assert_array_equal(scales, row + row + [1.0, 1.0])
    unbiased = memory_step_scales(2, 3, 2, inputs, bias=False, memory_scale=0.01)
    np.testing.assert_array_equal(unbiased, row + row)


def test_cmaes_first_steps_follow_the_step_scales():
    scales = np.array([1.0, 1.0, 0.01, 0.01])
    population = np.concatenate([CMAES(4, 2.0, 200, seed, step_scales=scales).ask() for seed in range(3)])
    spread = population.std(axis=0)
    np.testing.assert_allclose(spread[:2], 2.0, rtol=0.15)
    np.testing.assert_allclose(spread[2:], 0.02, rtol=0.15)
    isotropic = CMAES(4, 2.0, 8, 5).ask()
    np.testing.assert_array_equal(CMAES(4, 2.0, 8, 5, step_scales=np.ones(4)).ask(), isotropic)
    with pytest.raises(ValueError, match="step_scales must be 4 positive numbers"):
        CMAES(4, 2.0, 8, 5, step_scales=np.array([1.0, 0.0, 1.0, 1.0]))


def test_a_two_frame_c_steps_every_weight_at_full_scale():
    """``zz`` reads no memory unit: no weight of it is scaled down."""
    scales = memory_step_scales(2, 3, 1, "zz", bias=True, memory_scale=0.01)
    np.testing.assert_array_equal(scales, np.ones(LinearController(2, 3, 1, "zz").num_parameters))


def test_the_agent_hands_a_two_frame_c_the_previous_frame_s_z():
    """V+M+C in the real env with ``zz``: C's action at each frame equals C on [z now, z of the frame
    before] (the first frame's own z at the first), with M's state stepped by (z, action)."""
    from worldmodels.models.vae import ConvVAE, frames_to_input
    from worldmodels.vmc.agent import WorldModelAgent

    torch.manual_seed(0)
    vae, model = ConvVAE(4).eval(), MDNRNN(4, 1, 8, 2).eval()
    controller = LinearController(4, 8, 1, "zz")
    controller.set_flat(torch.randn(controller.num_parameters) * 3)
    frames = torch.randint(0, 256, (3, 2, 64, 64, 3), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    agent = WorldModelAgent(vae, model, controller)
    agent.reset([0, 1])
    acted = [agent.act(frames[t].numpy()) for t in range(3)]
    with torch.no_grad():
        state, previous = None, None
        for t in range(3):
            z, _ = vae.encode(frames_to_input(frames[t]))
            previous = z if previous is None else previous
            h = torch.zeros(2, 8) if state is None else state[0][0]
            c = torch.zeros(2, 8) if state is None else state[1][0]
            action = controller(z, h, c, previous)
            np.testing.assert_allclose(acted[t], action.numpy(), rtol=1e-5, atol=1e-6)
            _, _, state = model(z[:, None], action[:, None], state)
            previous = z
    assert np.abs(acted[1] - acted[2]).max() > 1e-4, "different frames must give different actions"


def test_a_c_with_a_hidden_layer_acts_as_computed_by_hand():
    controller = LinearController(2, 3, 1, "z", layer_size=2)
    assert controller.num_parameters == 2 * 2 + 2 + 2 + 1
    # W1 rows (0.5, -1) and (2, 0.25), b1 (0.1, -0.2), W2 (1.5, -0.5), b2 0.3
    vector = torch.tensor([0.5, -1.0, 2.0, 0.25, 0.1, -0.2, 1.5, -0.5, 0.3])
    controller.set_flat(vector)
    z = torch.tensor([[1.0, 2.0]])
    hidden = torch.tanh(torch.tensor([0.5 - 2.0 + 0.1, 2.0 + 0.5 - 0.2]))
    expected = torch.tanh(1.5 * hidden[0] - 0.5 * hidden[1] + 0.3).reshape(1, 1)
    torch.testing.assert_close(controller(z, torch.zeros(1, 3)), expected)
    torch.testing.assert_close(population_actions(vector[None], z, torch.zeros(1, 3), 1, "z", layer_size=2), expected)
    torch.manual_seed(0)
    many = torch.randn(5, controller.num_parameters)
    zs, hs = torch.randn(5, 2), torch.randn(5, 3)
    for row in range(5):
        controller.set_flat(many[row])
        torch.testing.assert_close(population_actions(many, zs, hs, 1, "z", layer_size=2)[row],
                                   controller(zs[row:row + 1], hs[row:row + 1])[0])
    with pytest.raises(ValueError, match="hidden layer of 2 on 2 inputs"):
        population_actions(torch.zeros(1, 6), z, torch.zeros(1, 3), 1, "z", layer_size=2)


def test_the_hidden_layer_s_weights_on_memory_take_the_memory_step_scale():
    scales = memory_step_scales(2, 3, 1, "zh", bias=True, memory_scale=0.01, layer_size=2)
    row = [1.0, 1.0, 0.01, 0.01, 0.01]
    np.testing.assert_array_equal(scales, row + row + [1.0, 1.0] + [1.0, 1.0] + [1.0])
    assert len(scales) == LinearController(2, 3, 1, "zh", layer_size=2).num_parameters
