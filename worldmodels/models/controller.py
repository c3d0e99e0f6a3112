"""C: the paper's linear controller, ``a = tanh(W [z, h] + b)``, and its batched population form.

The parameters travel as one flat vector (``parameters_to_vector`` order: the weight ``(A, I)``
row by row, then the bias ``(A,)``), which is what CMA-ES searches over. ``inputs="z"`` is the
paper's ablation without M's hidden state (V only).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters


def controller_input_size(z_size: int, hidden_size: int, inputs: str) -> int:
    if inputs not in ("zh", "z"):
        raise ValueError(f"controller inputs must be 'zh' or 'z', got {inputs!r}")
    return z_size + (hidden_size if inputs == "zh" else 0)


def controller_features(z: torch.Tensor, h: torch.Tensor, inputs: str) -> torch.Tensor:
    """``z`` ``(N, Z)``, ``h`` ``(N, H)`` -> the controller's input ``(N, I)``."""
    return torch.cat([z, h], dim=-1) if inputs == "zh" else z


class LinearController(nn.Module):
    """``forward(z, h)``: ``(N, Z)``, ``(N, H)`` -> actions ``(N, A)`` in [-1, 1]."""

    def __init__(self, z_size: int, hidden_size: int, action_size: int, inputs: str = "zh") -> None:
        super().__init__()
        self.z_size, self.hidden_size, self.action_size, self.inputs = z_size, hidden_size, action_size, inputs
        self.linear = nn.Linear(controller_input_size(z_size, hidden_size, inputs), action_size)

    def forward(self, z: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.linear(controller_features(z, h, self.inputs)))

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
                       inputs: str = "zh") -> torch.Tensor:
    """Each row its own controller: ``flat`` ``(N, D)`` parameter vectors, ``z`` ``(N, Z)``,
    ``h`` ``(N, H)`` -> actions ``(N, A)``; row ``n`` equals ``LinearController.set_flat(flat[n])``."""
    features = controller_features(z, h, inputs)
    weights = flat[:, :action_size * features.shape[1]].view(len(flat), action_size, features.shape[1])
    bias = flat[:, action_size * features.shape[1]:]
    return torch.tanh(torch.einsum("nai,ni->na", weights, features) + bias)
