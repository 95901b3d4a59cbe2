r"""Adafactor and Muon, twins of ``torch.optim.Adafactor`` and ``torch.optim.Muon``: thin shells over
:func:`book.optim.functional.adafactor` and :func:`book.optim.functional.muon`.

Both break Adam's pattern of one parameter-shaped state per moment. Adafactor stores, for an
:math:`n \times m` matrix, :math:`n + m` numbers of second-moment statistics and no first
moment, where Adam keeps :math:`2nm`; Muon stores one momentum buffer and replaces its direction by the nearest
(semi-)orthogonal matrix, so every direction of a layer moves by about the same amount.

    >>> import torch
    >>> from book.optim import Adafactor
    >>> w = torch.zeros(300, 200, requires_grad=True)
    >>> opt = Adafactor([w])
    >>> w.grad = torch.randn(300, 200)
    >>> opt.step()
    >>> {key: tuple(value.shape) for key, value in opt.state[w].items()}   # 500 numbers, not 60,000
    {'step': (), 'row_var': (300, 1), 'col_var': (1, 200)}
"""

from __future__ import annotations

from typing import Callable, Iterable

import torch
from torch import Tensor

from book import checks
from book.optim import functional as F
from book.optim._base import ListOptimizer, single_tensor_loop, step_counter

__all__ = ["Adafactor", "Muon"]

_adafactor_loop = single_tensor_loop(F.adafactor)
_muon_loop = single_tensor_loop(F.muon)


def _grad(p: Tensor, name: str) -> Tensor:
    """``p.grad``, refusing complex parameters and sparse gradients with torch's messages."""
    if torch.is_complex(p):
        raise RuntimeError(f"{name} does not support complex parameters")
    if p.grad.is_sparse:
        raise RuntimeError(f"{name} does not support sparse gradients")
    return p.grad


class Adafactor(ListOptimizer):
    r"""Adafactor (Shazeer & Stern, 2018): ``torch.optim.Adafactor``'s twin.

    .. math::

        \begin{aligned}
        &\textbf{input: } \gamma \text{ (lr)},\ \tau \text{ (beta2\_decay)},\
            (\epsilon_1, \epsilon_2) \text{ (eps)},\ d,\ \lambda \text{ (weight\_decay)};\
            R_0 = C_0 = v_0 = 0 \\
        &\textbf{for } t = 1, 2, \dots \\
        &\quad G_t \leftarrow \nabla f_t(\theta_{t-1})
            \quad (\text{or } -\nabla f_t(\theta_{t-1}) \text{ if maximize}) \\
        &\quad \hat\beta_{2,t} \leftarrow 1 - t^{\tau}, \quad
            \rho_t \leftarrow \min(\gamma, 1/\sqrt t), \quad
            \alpha_t \leftarrow \max(\epsilon_2, \mathrm{RMS}(\theta_{t-1}))\, \rho_t \\
        &\quad \theta_{t-1} \leftarrow (1 - \gamma\lambda)\, \theta_{t-1} \\
        &\quad \textbf{if } \dim G_t \ge 2: \
            R_t \leftarrow \hat\beta_{2,t} R_{t-1} + (1 - \hat\beta_{2,t})\,
                \mathrm{mean}_{\text{cols}}(G_t^2), \
            C_t \leftarrow \hat\beta_{2,t} C_{t-1} + (1 - \hat\beta_{2,t})\,
                \mathrm{mean}_{\text{rows}}(G_t^2), \\
        &\hspace{7em} \hat V_t \leftarrow R_t C_t / \max(\mathrm{mean}(R_t), \epsilon_1) \\
        &\quad \textbf{else}: \ \hat V_t = v_t \leftarrow \hat\beta_{2,t} v_{t-1}
            + (1 - \hat\beta_{2,t})\, G_t^2 \\
        &\quad U_t \leftarrow G_t / \max(\sqrt{\hat V_t}, \epsilon_1), \quad
            \theta_t \leftarrow \theta_{t-1} - \alpha_t\, U_t / \max(1, \mathrm{RMS}(U_t)/d)
        \end{aligned}

    A matrix's second moment is kept as two factors, the running mean of :math:`G^2` over
    each row (``state[p]["row_var"]``, shape ``(n, 1)``) and over each column
    (``state[p]["col_var"]``, shape ``(1, m)``): :math:`n + m` numbers instead of Adam's
    :math:`nm`. Their outer product divided by the overall mean is the rank-one estimate of
    :math:`\mathbb{E}[G^2]` that is optimal in a generalized KL divergence (the paper's
    argument), exact whenever the averaged :math:`G^2` has rank one. A tensor of more dimensions is
    factored over its last two (``(..., n, 1)`` and ``(..., 1, m)``); a vector keeps a full
    ``state[p]["variance"]``. ``state[p]["step"]`` is :math:`t`. There is no first moment
    (momentum). The step is *relative*: :math:`\alpha_t` scales with the parameter's RMS, so
    a tensor of large weights takes large steps; :math:`\epsilon_2` lets a zero tensor move.
    Update clipping divides :math:`U_t` by :math:`\mathrm{RMS}(U_t)/d` when that exceeds 1.

    Note:
        **Where torch departs from Shazeer & Stern** (checked against both: the paper's
        final algorithms, for weight matrices and for vectors, with its proposed
        hyperparameters; torch 2.13's ``torch/optim/_adafactor.py``):

        - *The learning rate caps the relative step.* The paper has no learning rate:
          :math:`\rho_t = \min(10^{-2}, 1/\sqrt t)`. torch puts ``lr`` where :math:`10^{-2}`
          is, with the default ``lr=1e-2``, so the default schedule is the paper's.
        - *Weight decay* (the paper has none) is decoupled and scaled by ``lr``, not by the
          actual step :math:`\alpha_t`: :math:`\theta \leftarrow (1 - \gamma\lambda)\theta`.
          With ``lr=1e-2`` and ``weight_decay=1e-2`` a weight shrinks by :math:`10^{-4}` per
          step, whatever its RMS. (torch's docstring says the default ``weight_decay`` is
          ``1e-2``; its code, and this class, use ``0.0``.)
        - :math:`\epsilon_1`. The paper adds :math:`\epsilon_1 = 10^{-30}` to :math:`G^2` before
          averaging. torch instead floors the mean of :math:`R` at :math:`\epsilon_1` and
          :math:`\sqrt{\hat V}` at :math:`\epsilon_1`, with :math:`\epsilon_1` the dtype's
          machine epsilon by default (``eps=(None, 1e-3)``: about :math:`1.2 \times 10^{-7}`
          in float32). So a zero gradient gives a zero update, and no coordinate's step can
          exceed :math:`|G| / \epsilon_1`. (torch's docstring, in its note on
          :math:`\epsilon_1`, writes the averages of :math:`G \odot G + 1_n 1_m^\top`, a term
          its code does not add; the code is what is reproduced here.)
        - *Means, not sums.* The paper's :math:`R` and :math:`C` are row and column sums of
          :math:`G^2`; torch keeps means. :math:`\hat V = R C / \mathrm{sum}(R)` with sums
          equals :math:`r c / \mathrm{mean}(r)` with means, so only the scale of the stored
          state (and of :math:`\epsilon_1`'s floor) differs.
        - The same as the paper: the decay schedule :math:`\hat\beta_{2,t} = 1 - t^{-0.8}`
          (``beta2_decay=-0.8``; :math:`1 - \hat\beta_{2,1} = 1`, so no bias correction),
          :math:`\epsilon_2 = 10^{-3}`, update clipping at :math:`d = 1`, no first moment
          (the paper's final algorithm drops momentum; torch offers none), and
          :math:`\alpha_t` computed from the parameter before the step.

        **Mixed dtypes in one group.** With :math:`\epsilon_1` = ``None``, torch takes the
        machine epsilon of the *first* parameter it steps in a group and keeps it for the
        rest of the group (a variable set once in its loop); here each tensor uses its own
        dtype's. The two differ only where a floor is reached (tiny gradients).

        **foreach.** Accepted, and kept in the parameter groups as torch does, but both
        values run the single-tensor kernel. torch too defaults to its loop for Adafactor
        (``foreach=None``), since a foreach path would need parameter-sized temporaries for
        every tensor at once and Adafactor is chosen to save memory; its foreach path gives
        the same numbers up to rounding (1 ulp in a test of 30 steps).

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: :math:`\gamma \ge 0`, the cap of the relative step size and the factor of the
            weight decay (default ``1e-2``, the paper's cap).
        beta2_decay: :math:`\tau \le 0` in :math:`\hat\beta_{2,t} = 1 - t^{\tau}` (default
            ``-0.8``).
        eps: :math:`(\epsilon_1, \epsilon_2)`: the floor of the variance estimate (``None``:
            the machine epsilon of the parameter's dtype) and the floor of the parameter
            scale (default ``(None, 1e-3)``).
        d: the clipping threshold :math:`d \ge 1` on :math:`\mathrm{RMS}(U_t)` (default 1).
        weight_decay: :math:`\lambda \ge 0` (default 0).
        foreach: accepted for torch's signature (see the note); default ``None``.
        maximize: ascend the objective instead (default False).

    Raises:
        ValueError: for ``lr < 0``, ``beta2_decay > 0``, a negative epsilon, ``d < 1`` or a
            negative ``weight_decay``, in torch's words (``"Learning rate should be >= 0 but
            is: -1.0"``).
        RuntimeError: at a step, for a complex parameter or a sparse gradient.

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 1)
        >>> X, y = torch.randn(64, 4), torch.randn(64, 1)
        >>> opt = Adafactor(model.parameters(), lr=0.1)
        >>> for _ in range(100):
        ...     opt.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(X), y)
        ...     loss.backward()
        ...     opt.step()
        >>> bool(loss < 1.5), sorted(opt.state[model.weight]), sorted(opt.state[model.bias])
        (True, ['col_var', 'row_var', 'step'], ['step', 'variance'])

    References:
        N. Shazeer, M. Stern, "Adafactor: adaptive learning rates with sublinear memory cost",
        ICML 2018, arXiv:1804.04235.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float | Tensor = 1e-2,
        beta2_decay: float = -0.8,
        eps: tuple[float | None, float] = (None, 1e-3),
        d: float = 1.0,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
    ) -> None:
        checks.optim_arg(lr, "learning rate", message="Learning rate should be >= 0 but is: {value}")
        checks.optim_arg(beta2_decay, "beta2_decay", low=None, high=0.0,
                         message="beta2_decay should be <= 0 but is: {value}")
        if eps[0] is not None:
            checks.optim_arg(eps[0], "epsilon1", message="epsilon1 should be >= 0 but is: {value}")
        checks.optim_arg(eps[1], "epsilon2", message="epsilon2 should be >= 0 but is: {value}")
        checks.optim_arg(d, "d", low=1.0, message="Clipping threshold d should be >= 1 but is: {value}")
        checks.optim_arg(weight_decay, "weight_decay", message="weight_decay should be >= 0 but is: {value}")
        defaults = dict(
            lr=lr,
            beta2_decay=beta2_decay,
            eps=eps,
            d=d,
            weight_decay=weight_decay,
            foreach=foreach,
            maximize=maximize,
        )
        super().__init__(params, defaults)

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("foreach", None)
            group.setdefault("maximize", False)

    def _init_group(self, group: dict) -> tuple[list, ...]:
        """The group's parameters that have a gradient, with their gradients and state (created at the first step)."""
        params, grads, row_vars, col_vars, variances, steps = [], [], [], [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = _grad(p, "Adafactor")
            params.append(p)
            grads.append(grad)
            state = self.state[p]
            if len(state) == 0:
                state["step"] = step_counter()
                if grad.dim() > 1:  # factored: (..., n, 1) and (..., 1, m)
                    state["row_var"] = grad.new_zeros((*grad.shape[:-1], 1))
                    state["col_var"] = grad.new_zeros((*grad.shape[:-2], 1, grad.shape[-1]))
                else:  # a vector (or a scalar): the full second moment
                    state["variance"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
            row_vars.append(state.get("row_var"))
            col_vars.append(state.get("col_var"))
            variances.append(state.get("variance"))
            steps.append(state["step"])
        return params, grads, row_vars, col_vars, variances, steps

    HYPERPARAMETERS = ("lr", "beta2_decay", "eps", "d", "weight_decay", "maximize")

    def _step_impl(self, group: dict) -> Callable:
        """The single-tensor loop, whatever ``foreach`` says (see the class's note)."""
        return _adafactor_loop


class Muon(ListOptimizer):
    r"""Muon, momentum orthogonalised by Newton–Schulz (Jordan et al., 2024): ``torch.optim.Muon``'s twin.

    .. math::

        \begin{aligned}
        &\textbf{input: } \eta \text{ (lr)},\ \lambda \text{ (weight\_decay)},\
            \mu \text{ (momentum)},\ (a, b, c) \text{ (ns\_coefficients)},\
            k \text{ (ns\_steps)},\ \epsilon \text{ (eps)};\ B_0 = 0 \\
        &\textbf{for } t = 1, 2, \dots \textbf{ and each matrix } \theta \in \mathbb{R}^{A \times B} \\
        &\quad g_t \leftarrow \nabla f_t(\theta_{t-1}) \\
        &\quad B_t \leftarrow \mu B_{t-1} + (1 - \mu)\, g_t \\
        &\quad D_t \leftarrow (1 - \mu)\, g_t + \mu B_t \quad
            (\text{nesterov; else } D_t = B_t) \\
        &\quad O_t \leftarrow \mathrm{NS}_k(D_t) \approx U V^\top
            \quad \text{where } D_t = U S V^\top \\
        &\quad \theta_t \leftarrow (1 - \eta\lambda)\, \theta_{t-1} - \eta'\, O_t, \quad
            \eta' = \eta \sqrt{\max(1, A/B)}
            \quad (\text{or } 0.2\,\eta\sqrt{\max(A, B)} \text{ with "match\_rms\_adamw"})
        \end{aligned}

    SGD with momentum gives each matrix a direction :math:`D = U S V^\top` whose few large
    singular values dominate; Muon keeps the singular vectors and sets every singular value
    to about 1, so the rare directions move as much as the common ones. The quintic
    Newton–Schulz iteration :func:`book.optim.functional.newton_schulz` does that with five
    pairs of matrix products, no SVD; its singular values land in about
    :math:`[0.68, 1.2]`, not exactly 1. The state is ``state[p]["momentum_buffer"]`` (there
    is no step counter). Only 2-D parameters: biases, gains and (in Jordan's recipe) the
    embedding and the output layer go to another optimizer, usually AdamW::

        hidden = [p for p in model.parameters() if p.ndim == 2]
        others = [p for p in model.parameters() if p.ndim != 2]
        muon, adamw = Muon(hidden, lr=0.02), AdamW(others, lr=3e-4)   # step both

    Note:
        **bfloat16.** torch casts the direction to bfloat16 and runs the whole iteration in
        it (norm, products, sums), then adds the bfloat16 :math:`O_t` to the parameter in the
        parameter's dtype, whether that is float32 or float64. This class does the same
        by default (``ns_dtype=torch.bfloat16``), with the same operations in the same order
        (``torch.addmm`` for :math:`bA + cA^2` and :math:`aX + BX`, whose single rounding
        differs from separate products and sums), so it equals torch **bit for bit** on a
        CPU, in float32 and in float64. bfloat16 keeps 8 significant bits, so each of the
        iteration's operations rounds by up to :math:`2^{-9}` relative; after five steps
        :math:`O_t` differs from the same iteration run in float64 by 1-2% of its Frobenius
        norm (measured on Gaussian matrices from :math:`12 \times 20` to :math:`256 \times
        512`), its singular values still in about :math:`[0.68, 1.14]`. That is harmless to
        training, but it sets the tolerance between torch and any Muon that orthogonalises
        in float32 or float64: about :math:`0.01\text{-}0.02\,\eta'` per step (after 100 steps
        of the test problem the parameters differed by :math:`0.1\text{-}0.15\,\eta'`), far
        above float32's rounding. Even a float64 parameter under torch's Muon moves by
        bfloat16-rounded steps. ``ns_dtype=None`` runs the iteration in the buffer's own
        dtype: the math to the last digit (checked against the singular values in the
        tests), but no longer torch's numbers. It is an execution choice like a device: an attribute, not a group
        hyperparameter, and not saved in the ``state_dict``.

        **Conventions.** The buffer is an exponential average, :math:`B \leftarrow \mu B + (1
        - \mu)g` (``lerp``), as in torch's code and Jordan's; torch's docstring writes
        :math:`B \leftarrow \mu B + g`. Newton–Schulz first divides by the Frobenius norm,
        so the two differ only by the scale of the buffer. The weight decay is decoupled and
        scaled by the unadjusted :math:`\eta` (torch's docstring calls it an "L2 penalty";
        it is AdamW's form). torch's defaults are ``lr=1e-3, weight_decay=0.1``; Jordan's
        reference ``Muon`` uses ``lr=0.02, weight_decay=0``, adds :math:`\epsilon` to the norm
        instead of flooring it, forms :math:`bA + cA^2` with separate products, and also
        accepts convolution kernels (flattened to 2-D), so its numbers differ from torch's in
        the last bits.

        **Validation.** As torch: the hyperparameters and the 2-D shapes at construction, the
        Newton–Schulz settings (``ns_steps < 100``, three coefficients) at the first step.
        Two departures, both refusing what torch would accept silently: a parameter group
        added later with a non-2-D tensor is refused when it is added (torch fails at the
        next step), and an unknown ``adjust_lr_fn`` set in a group after construction
        raises at the step (torch then applies no adjustment).

    Args:
        params: an iterable of 2-D tensors, or of dicts defining parameter groups.
        lr: :math:`\eta \ge 0` (default ``1e-3``).
        weight_decay: :math:`\lambda \ge 0`, decoupled (default ``0.1``).
        momentum: :math:`\mu \ge 0` (default ``0.95``).
        nesterov: use the look-ahead direction :math:`(1 - \mu) g + \mu B` (default True).
        ns_coefficients: :math:`(a, b, c)` of the quintic iteration (default ``(3.4445,
            -4.7750, 2.0315)``).
        eps: the floor of the norm that Newton–Schulz divides by (default ``1e-7``).
        ns_steps: :math:`k`, the number of Newton–Schulz steps (default 5).
        adjust_lr_fn: ``None`` or ``"original"`` (:math:`\sqrt{\max(1, A/B)}`), or
            ``"match_rms_adamw"`` (:math:`0.2\sqrt{\max(A, B)}`); see
            :func:`book.optim.functional.muon_lr` (default ``None``).
        ns_dtype: the dtype of the Newton–Schulz iteration: ``torch.bfloat16`` (default, as
            torch) or ``None`` for the buffer's dtype (keyword only; not torch's).

    Raises:
        ValueError: for a negative ``lr``, ``momentum`` or ``weight_decay``, an unknown
            ``adjust_lr_fn``, or a parameter that is not 2-D, in torch's words
            (``"Muon only supports 2D parameters whereas we found a parameter with size:
            torch.Size([3])"``).

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> W = torch.zeros(8, 4, requires_grad=True)
        >>> target = torch.randn(8, 4)
        >>> opt = Muon([W], lr=0.1, weight_decay=0.0)
        >>> for _ in range(50):
        ...     opt.zero_grad()
        ...     loss = (W - target).pow(2).sum()
        ...     loss.backward()
        ...     opt.step()
        >>> bool(loss < 0.1 * target.pow(2).sum()), sorted(opt.state[W])
        (True, ['momentum_buffer'])

    References:
        K. Jordan, Y. Jin, V. Boza, J. You, F. Cesista, L. Newhouse, J. Bernstein, "Muon: an
        optimizer for hidden layers in neural networks", blog post, 2024,
        https://kellerjordan.github.io/posts/muon/.
        J. Liu et al., "Muon is scalable for LLM training", arXiv:2502.16982, 2025
        (``"match_rms_adamw"``).
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float | Tensor = 1e-3,
        weight_decay: float = 0.1,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = F.MUON_COEFFICIENTS,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        *,
        ns_dtype: torch.dtype | None = torch.bfloat16,
    ) -> None:
        checks.optim_arg(lr, "learning rate", message="Learning rate should be >= 0 but is: {value}")
        checks.optim_arg(momentum, "momentum", message="momentum should be >= 0 but is: {value}")
        checks.optim_arg(weight_decay, "weight decay", message="weight decay should be >= 0 but is: {value}")
        if adjust_lr_fn is not None and adjust_lr_fn not in ("original", "match_rms_adamw"):
            raise ValueError(f"Adjust learning rate function {adjust_lr_fn} is not supported")
        if ns_dtype is not None and not (isinstance(ns_dtype, torch.dtype) and ns_dtype.is_floating_point):
            raise TypeError(f"ns_dtype must be a floating torch.dtype or None, got {ns_dtype!r}")
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=ns_coefficients,
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
        )
        super().__init__(params, defaults)
        self.ns_dtype = ns_dtype  # an execution choice, like a device: not a group hyperparameter

    def add_param_group(self, param_group: dict) -> None:
        """Add a group, refusing any tensor that is not 2-D (with torch's message)."""
        super().add_param_group(param_group)
        for p in self.param_groups[-1]["params"]:
            if p.ndim != 2:
                del self.param_groups[-1]
                raise ValueError(
                    f"Muon only supports 2D parameters whereas we found a parameter with size: {p.size()}"
                )

    def _init_group(self, group: dict) -> tuple[list, ...]:
        """The group's parameters that have a gradient, with their gradients and buffers (created at the first step)."""
        params, grads, buffers = [], [], []
        for p in group["params"]:
            if p.grad is None:
                continue
            grad = _grad(p, "Muon")
            params.append(p)
            grads.append(grad)
            state = self.state[p]
            if "momentum_buffer" not in state:
                state["momentum_buffer"] = torch.zeros_like(grad, memory_format=torch.preserve_format)
            buffers.append(state["momentum_buffer"])
        return params, grads, buffers

    HYPERPARAMETERS = ("lr", "weight_decay", "momentum", "nesterov", "ns_coefficients", "eps", "ns_steps",
                       "adjust_lr_fn")

    def _step_impl(self, group: dict) -> Callable:
        """The single-tensor loop (Newton–Schulz works on one matrix at a time), in this optimizer's ``ns_dtype``."""
        ns_dtype = getattr(self, "ns_dtype", torch.bfloat16)
        return lambda *lists, **hyperparameters: _muon_loop(*lists, **hyperparameters, ns_dtype=ns_dtype)
