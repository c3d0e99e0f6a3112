"""C: the paper's linear controller, ``a = tanh(W x + b)``, and its batched population form.

``x`` is what C reads (``inputs``): ``zh`` = [z, h] (CarRacing), ``zch`` = [z, c, h] with M's LSTM
cell ``c`` (the paper's Doom C), ``z`` = V only (the paper's ablation), ``zz`` = [z, z of the step
before] (two frames' pictures: a linear C reads motion from their difference without M's hundreds
of memory units in its input; on the first step the step before is the first frame itself). The
Doom C has no bias (``bias=False``): 64 + 512 + 512 = 1,088 weights for one action.

With ``layer_size`` L > 0, C has one tanh hidden layer before its output, ``a = tanh(W2 tanh(W1 x + b1)
+ b2)``: what a C needs where what it reads carries the task only non-linearly (``wm readout``).

The parameters travel as one flat vector (``parameters_to_vector`` order: the weight ``(A, I)``
row by row, then the bias ``(A,)`` when there is one; with a hidden layer ``W1`` ``(L, I)`` row by row
and ``b1`` ``(L,)`` come first and the output's ``I`` is L), which is what CMA-ES searches over.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

INPUTS = ("zh", "z", "zch", "zz")


def controller_input_size(z_size: int, hidden_size: int, inputs: str) -> int:
    if inputs not in INPUTS:
        raise ValueError(f"controller inputs must be one of {', '.join(INPUTS)}, got {inputs!r}")
    if inputs == "zz":
        return 2 * z_size
    return z_size + hidden_size * {"z": 0, "zh": 1, "zch": 2}[inputs]


def controller_features(z: torch.Tensor, h: torch.Tensor, inputs: str, c: torch.Tensor | None = None,
                        previous_z: torch.Tensor | None = None) -> torch.Tensor:
    """``z`` ``(N, Z)``, M's hidden ``h`` and cell ``c`` ``(N, H)``, the step before's ``previous_z``
    ``(N, Z)`` -> the controller's input ``(N, I)``."""
    if inputs == "z":
        return z
    if inputs == "zh":
        return torch.cat([z, h], dim=-1)
    if inputs == "zz":
        if previous_z is None:
            raise ValueError("controller inputs 'zz' need the previous step's z")
        return torch.cat([z, previous_z], dim=-1)
    if c is None:
        raise ValueError("controller inputs 'zch' need M's LSTM cell state c")
    return torch.cat([z, c, h], dim=-1)


def memory_step_scales(z_size: int, hidden_size: int, action_size: int, inputs: str, bias: bool,
                       memory_scale: float, layer_size: int = 0) -> np.ndarray:
    """Per-parameter scales of CMA-ES's first step ``(D,)`` in the flat order (weights ``(A, I)`` row
    by row, then the bias): 1 on the weights of z and on the bias, ``memory_scale`` on those of M's
    ``c`` and ``h``. A small ``memory_scale`` lets the search move freely on the few weights of what V
    sees while M's hundreds of memory units add little noise to the action at first."""
    size = controller_input_size(z_size, hidden_size, inputs)
    row = np.full(size, float(memory_scale))
    row[:2 * z_size if inputs == "zz" else z_size] = 1.0  # zz reads no memory: every weight is on a z
    if layer_size:  # the hidden layer reads the inputs; its biases and the output layer step at full scale
        rest = layer_size + action_size * layer_size + (action_size if bias else 0)
        return np.concatenate([np.tile(row, layer_size), np.ones(rest)])
    scales = np.tile(row, action_size)
    return np.concatenate([scales, np.ones(action_size)]) if bias else scales


class LinearController(nn.Module):
    """``forward(z, h, c, previous_z)``: ``(N, Z)``, ``(N, H)``, ``(N, H)``, ``(N, Z)`` -> actions ``(N, A)``
    in [-1, 1] (``c`` only for ``zch``, ``previous_z`` only for ``zz``); the paper's linear form, or with
    ``layer_size`` > 0 one tanh hidden layer of that many units before it."""

    def __init__(self, z_size: int, hidden_size: int, action_size: int, inputs: str = "zh",
                 bias: bool = True, layer_size: int = 0) -> None:
        super().__init__()
        self.z_size, self.hidden_size, self.action_size, self.inputs = z_size, hidden_size, action_size, inputs
        self.bias, self.layer_size = bias, layer_size
        size = controller_input_size(z_size, hidden_size, inputs)
        if layer_size:  # registered first: its parameters lead the flat vector
            self.layer = nn.Linear(size, layer_size)
            size = layer_size
        self.linear = nn.Linear(size, action_size, bias=bias)

    def forward(self, z: torch.Tensor, h: torch.Tensor, c: torch.Tensor | None = None,
                previous_z: torch.Tensor | None = None) -> torch.Tensor:
        x = controller_features(z, h, self.inputs, c, previous_z)
        if self.layer_size:
            x = torch.tanh(self.layer(x))
        return torch.tanh(self.linear(x))

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())

    def get_flat(self) -> torch.Tensor:
        """All parameters as one vector ``(D,)``."""
        return parameters_to_vector(self.parameters()).detach().clone()

    def set_flat(self, vector: torch.Tensor) -> None:
        """Load parameters from a vector ``(D,)`` made by :meth:`get_flat` (or by CMA-ES)."""
        if vector.shape != (self.num_parameters,):
            raise ValueError(f"expected {self.num_parameters} parameters, got {tuple(vector.shape)}")
        vector_to_parameters(vector.to(self.linear.weight.dtype), self.parameters())


def population_actions(flat: torch.Tensor, z: torch.Tensor, h: torch.Tensor, action_size: int,
                       inputs: str = "zh", c: torch.Tensor | None = None,
                       previous_z: torch.Tensor | None = None, layer_size: int = 0) -> torch.Tensor:
    """Each row its own controller: ``flat`` ``(N, D)`` parameter vectors, ``z`` and ``previous_z``
    ``(N, Z)``, ``h`` and ``c`` ``(N, H)`` -> actions ``(N, A)``; row ``n`` equals
    ``LinearController.set_flat(flat[n])``.

    ``layer_size`` L > 0: each row starts with a hidden layer's ``W1`` ``(L, I)`` and ``b1`` ``(L,)``.
    Whether the output has a bias is read from what is left: ``A * I`` weights without, ``A * (I + 1)`` with."""
    features = controller_features(z, h, inputs, c, previous_z)
    if layer_size:  # the hidden layer's W1 (L, I) and b1 (L,) lead each row
        count = layer_size * features.shape[1]
        if flat.shape[1] <= count + layer_size:
            raise ValueError(f"a hidden layer of {layer_size} on {features.shape[1]} inputs needs more than "
                             f"{count + layer_size} parameters per controller, got {flat.shape[1]}")
        first = flat[:, :count].view(len(flat), layer_size, features.shape[1])
        features = torch.tanh(torch.einsum("nli,ni->nl", first, features) + flat[:, count:count + layer_size])
        flat = flat[:, count + layer_size:]
    weight_count = action_size * features.shape[1]
    if flat.shape[1] not in (weight_count, weight_count + action_size):
        raise ValueError(f"expected {weight_count} (no bias) or {weight_count + action_size} parameters per "
                         f"controller, got {flat.shape[1]}")
    weights = flat[:, :weight_count].view(len(flat), action_size, features.shape[1])
    actions = torch.einsum("nai,ni->na", weights, features)
    if flat.shape[1] > weight_count:
        actions = actions + flat[:, weight_count:]
    return torch.tanh(actions)
