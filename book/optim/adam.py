r"""Adam, AMSGrad and AdamW: thin shells over :func:`book.optim.functional.adam` and its foreach twin."""

from __future__ import annotations

from typing import Callable, Iterable

import torch

from book import checks
from book.optim import compiled as _compiled
from book.optim import functional as F
from book.optim._base import ListOptimizer, single_tensor_loop, step_counter, use_foreach, zeros

__all__ = ["Adam", "AdamW"]

_adam_loop = single_tensor_loop(F.adam)


class Adam(ListOptimizer):
    r"""Adam, optionally AMSGrad: ``torch.optim.Adam``'s twin.

    .. math::

        \begin{aligned}
        &\textbf{input: } \eta \text{ (lr)},\ \beta_1, \beta_2 \text{ (betas)},\
            \epsilon \text{ (eps)},\ \lambda \text{ (weight\_decay)},\ \theta_0 \text{ (params)};\
            m_0 = v_0 = \hat v_0 = 0 \\
        &\textbf{for } t = 1, 2, \dots \\
        &\quad g_t \leftarrow \nabla f_t(\theta_{t-1})
            \quad (\text{or } -\nabla f_t(\theta_{t-1}) \text{ if maximize}) \\
        &\quad g_t \leftarrow g_t + \lambda\, \theta_{t-1}
            \quad (\text{AdamW instead: } \theta_{t-1} \leftarrow (1 - \eta\lambda)\,\theta_{t-1}) \\
        &\quad m_t \leftarrow \beta_1 m_{t-1} + (1 - \beta_1)\, g_t \\
        &\quad v_t \leftarrow \beta_2 v_{t-1} + (1 - \beta_2)\, g_t^2 \\
        &\quad \textbf{if } \text{amsgrad}: \ \hat v_t \leftarrow \max(\hat v_{t-1}, v_t),\
            \text{ and } \hat v_t \text{ replaces } v_t \text{ below} \\
        &\quad \theta_t \leftarrow \theta_{t-1} - \eta\, \frac{m_t / (1 - \beta_1^t)}
            {\sqrt{v_t / (1 - \beta_2^t)} + \epsilon}
        \end{aligned}

    :math:`m` and :math:`v` are running averages of the gradient and of its square,
    stored per parameter as ``state[p]["exp_avg"]`` and ``state[p]["exp_avg_sq"]``; with
    ``amsgrad=True`` their running maximum :math:`\hat v` is ``state[p]["max_exp_avg_sq"]``,
    and :math:`t` is ``state[p]["step"]`` (a 0-dim float32 CPU tensor, as in PyTorch).
    Dividing by :math:`1 - \beta^t` corrects the bias of averages that start at zero.
    Each parameter group may set its own values. The arithmetic is in
    :func:`book.optim.functional.adam` (see its notes on conventions: where
    :math:`\epsilon` goes, L2 penalty versus decoupled decay); this class validates,
    creates the state lazily (at a parameter's first step) and loops.

    Note:
        **foreach.** With ``foreach=None`` (the default; on a CPU not for one tensor or over 4M elements,
        see :func:`book.optim._base.use_foreach`) or ``True`` each step runs
        :func:`book.optim.functional.adam_foreach`, one ``torch._foreach_*`` call per
        operation for all the parameters of a group; ``foreach=False`` runs the
        single-tensor kernel once per parameter. Both give the same numbers (bit for bit
        on a CPU). The multi-tensor path is the default because it was faster on a model
        of 200 tensors and one million parameters on a shared 2-core CPU (a whole ``step``
        1.4 to 3 times faster for Adam and AdamW in two runs; on a GPU it also saves a kernel
        launch per tensor and operation; ``benchmarks/`` has the careful numbers).
        PyTorch picks foreach by default only on GPUs; the results are the same either way.

    Args:
        params: an iterable of tensors, or of dicts defining parameter groups.
        lr: the learning rate :math:`\eta \ge 0` (default ``1e-3``); a 0-d tensor steps as its
            value does (not with ``foreach=True``, which torch refuses without ``capturable``).
        betas: :math:`(\beta_1, \beta_2)`, each in :math:`[0, 1)` (default ``(0.9, 0.999)``).
        eps: :math:`\epsilon \ge 0`, added to the denominator (default ``1e-8``).
        weight_decay: :math:`\lambda \ge 0` (default 0): an L2 penalty added to the gradient,
            or, with ``decoupled_weight_decay=True``, a direct decay (AdamW).
        amsgrad: use AMSGrad's running maximum of :math:`v` (default False).
        foreach: ``None`` or ``True`` for the multi-tensor kernel, ``False`` for the
            single-tensor loop (default ``None``: multi-tensor).
        maximize: ascend the objective instead of descending it (default False).
        decoupled_weight_decay: decay the weights as AdamW does (default False; see
            :class:`AdamW`).
        compiled: keep each group's parameters, gradients and state as views into one flat
            buffer per dtype and device, and step them all in one pass over memory:
            :func:`book.optim.functional.adam_update` compiled by ``torch.compile``
            (:mod:`book.optim.compiled`; default False; opt-in:
            the first step compiles for seconds). Overrides ``foreach``; kept as the attribute
            ``compiled``, not in the parameter groups or the ``state_dict``.

    Raises:
        ValueError: for a negative ``lr``, ``eps`` or ``weight_decay``, a beta outside
            :math:`[0, 1)`, a tensor ``lr`` of more than one element or with ``foreach=True``
            (PyTorch's messages).

    Example:
        >>> import torch
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <torch._C.Generator object at ...>
        >>> model = torch.nn.Linear(4, 1)
        >>> X, y = torch.randn(64, 4), torch.randn(64, 1)
        >>> opt = Adam(model.parameters(), lr=0.05)
        >>> for _ in range(100):
        ...     opt.zero_grad()
        ...     loss = torch.nn.functional.mse_loss(model(X), y)
        ...     loss.backward()
        ...     opt.step()
        >>> bool(loss < 1.5), sorted(opt.state[model.weight]), opt.state[model.weight]["step"]
        (True, ['exp_avg', 'exp_avg_sq', 'step'], tensor(100.))

    References:
        D. P. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR 2015,
        arXiv:1412.6980.
        S. J. Reddi, S. Kale, S. Kumar, "On the convergence of Adam and beyond", ICLR 2018.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        decoupled_weight_decay: bool = False,
        compiled: bool = False,
    ) -> None:
        if isinstance(lr, torch.Tensor) and foreach:  # as torch.optim.Adam, which is not capturable here
            raise ValueError("lr as a Tensor is not supported for capturable=False and foreach=True")
        checks.optim_arg(lr, "learning rate")
        checks.optim_arg(eps, "epsilon value")
        checks.optim_arg(betas[0], "beta parameter at index 0", high=1.0, high_inclusive=False)
        checks.optim_arg(betas[1], "beta parameter at index 1", high=1.0, high_inclusive=False)
        checks.optim_arg(weight_decay, "weight_decay value")
        defaults = dict(
            lr=lr,
            betas=tuple(betas),
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            maximize=maximize,
            foreach=foreach,
            decoupled_weight_decay=decoupled_weight_decay,
        )
        super().__init__(params, defaults)
        self.compiled = bool(compiled)  # an execution choice, like a device: not a group hyperparameter

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group.setdefault("amsgrad", False)
            group.setdefault("maximize", False)
            group.setdefault("foreach", None)
            group.setdefault("decoupled_weight_decay", False)

    @staticmethod
    def _keys(group: dict) -> tuple[str, ...]:
        return ("exp_avg", "exp_avg_sq") + (("max_exp_avg_sq",) if group["amsgrad"] else ()) + ("step",)

    def _flat_step(self, group: dict) -> set:
        """``compiled=True``: the group's parameters as views into flat buffers, stepped in one compiled pass."""
        return _compiled.flat_step(self, group, self._keys(group), True, _compiled.adam_flat_kernel)

    def _init_group(self, group: dict, skip: set | tuple = ()) -> tuple[list, ...]:
        """The group's parameters that have a gradient (except ``skip``), with their gradients and state
        (created at the first step)."""
        amsgrad = group["amsgrad"]
        keys = self._keys(group)
        lists = self._gather(group, keys, lambda p: dict(step=step_counter(), exp_avg=zeros(p), exp_avg_sq=zeros(p),
                                                          **({"max_exp_avg_sq": zeros(p)} if amsgrad else {})),
                             skip)
        return lists if amsgrad else (*lists[:4], None, lists[4])  # the kernels take max_exp_avg_sqs=None

    HYPERPARAMETERS = ("lr", "betas", "eps", "weight_decay", "amsgrad", "maximize",
                       "decoupled_weight_decay")

    def _step_impl(self, group: dict) -> Callable:
        """The kernel on lists that steps this group: the multi-tensor one or the single-tensor loop."""
        return F.adam_foreach if use_foreach(group) else _adam_loop



class AdamW(Adam):
    r"""AdamW, Adam with decoupled weight decay: ``torch.optim.AdamW``'s twin.

    .. math::

        \begin{aligned}
        &\textbf{for } t = 1, 2, \dots \\
        &\quad g_t \leftarrow \nabla f_t(\theta_{t-1})
            \quad (\text{or } -\nabla f_t(\theta_{t-1}) \text{ if maximize}) \\
        &\quad \theta_{t-1} \leftarrow (1 - \eta\lambda)\, \theta_{t-1} \\
        &\quad m_t, v_t, (\hat v_t), \theta_t \leftarrow \text{Adam's step with } g_t
            \text{ (see Adam)}
        \end{aligned}

    The weights shrink by the factor :math:`1 - \eta\lambda` before each Adam step,
    instead of an L2 penalty :math:`\lambda\theta` entering the gradient. Adam's
    denominator :math:`\sqrt{\hat v} + \epsilon` rescales an L2 penalty's gradient like
    any other, so weights with large gradients are barely regularized; the decoupled
    decay shrinks all weights at the same relative rate. Same arguments, state and
    defaults as :class:`Adam`, except ``weight_decay=1e-2`` (PyTorch's default) and no
    ``decoupled_weight_decay`` argument (it is always on). The arithmetic is
    :func:`book.optim.functional.adamw`; see :func:`book.optim.functional.adam` for the
    notes on conventions (PyTorch's :math:`\eta\lambda` versus the paper's schedule
    multiplier) and :class:`Adam` for the foreach default.

    Example:
        >>> import torch
        >>> w = torch.ones(3, requires_grad=True)
        >>> opt = AdamW([w], lr=0.1, weight_decay=0.5)
        >>> w.grad = torch.zeros(3)         # no gradient at all: only the decay acts
        >>> opt.step()
        >>> w.detach()                      # 1 - 0.1 * 0.5
        tensor([0.9500, 0.9500, 0.9500])

    References:
        I. Loshchilov, F. Hutter, "Decoupled weight decay regularization", ICLR 2019,
        arXiv:1711.05101.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        compiled: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            decoupled_weight_decay=True,
            compiled=compiled,
        )

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True  # always, whatever a loaded state says (as PyTorch)
