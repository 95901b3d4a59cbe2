r"""Watch a network train: gradient norms per layer, activation statistics, dead units.

A loss curve says *that* training goes badly; the layers say *why*. Three readings find most
problems of deep networks:

- **gradient norms per layer**, :math:`\|\nabla_{W_l} L\|_2`: if they shrink geometrically
  from the last layer to the first, the early layers barely learn (vanishing gradients,
  e.g. saturated sigmoids); if they grow, steps explode;
- **weight norms** :math:`\|W_l\|_2` (Frobenius), to compare with the gradients: the ratio
  :math:`\eta \|\nabla_{W_l} L\| / \|W_l\|` is the relative size of a step, and a common
  rule of thumb wants it around :math:`10^{-3}`;
- **activation statistics**: the mean and standard deviation of each watched module's output,
  and the fraction of **dead units**, those whose output is :math:`\le 0` for every sample of
  the batch. A dead ReLU passes no gradient to its weights, so it may never come back.

:class:`Monitor` records them during :func:`book.train.fit` as a step hook::

    >>> import torch
    >>> from book.train import fit
    >>> from book.optim import SGD
    >>> _ = torch.manual_seed(0)
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> X, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    >>> with Monitor(model) as monitor:
    ...     _ = fit(model, SGD(model.parameters(), lr=0.1), torch.nn.functional.cross_entropy,
    ...             (X, y), epochs=2, batch_size=16, step_callbacks=[monitor], progress=False)
    >>> monitor.steps
    [1, 2, 3, 4, 5, 6, 7, 8]
    >>> sorted(monitor.grad_norms), sorted(monitor.dead_fractions)
    (['0', '2'], ['0', '1', '2'])
    >>> len(monitor.grad_norms["0"])
    8

References:
    X. Glorot, Y. Bengio, "Understanding the difficulty of training deep feedforward neural
    networks", AISTATS 2010 (activation and gradient statistics per layer, saturation).
    A. Karpathy, "A recipe for training neural networks", 2019 (visualize everything).
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from book import checks

__all__ = ["Monitor", "LAYER_TYPES", "ACTIVATION_TYPES"]

#: Modules whose weight gradient is watched by default.
LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
#: Activation modules whose output is watched by default (besides the layers').
ACTIVATION_TYPES = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.PReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU,
                    nn.Mish, nn.Tanh, nn.Sigmoid, nn.Softplus, nn.Hardtanh)

_NAN = math.nan


def _output_stats(output: Tensor) -> Tensor:
    r"""``[mean, std, dead fraction]`` of a batch of outputs ``(B, ...)``, as one tensor (no sync).

    The std is the population one (over all entries); a unit is one entry of a sample's output
    (a feature of a ``Linear``, a channel at one position of a ``Conv``) and is dead when it is
    :math:`\le 0` for all ``B`` samples.
    """
    x = output.detach()
    if x.dtype not in (torch.float32, torch.float64):
        x = x.float()
    if x.numel() == 0:
        return torch.full((3,), _NAN, dtype=x.dtype, device=x.device)
    dead = (x <= 0).all(dim=0) if x.dim() >= 1 else x <= 0  # (...) one flag per unit
    return torch.stack([x.mean(), x.std(correction=0), dead.to(x.dtype).mean()])


class Monitor:
    r"""Record per-layer gradient and weight norms and activation statistics during training.

    A ``Monitor`` is a step hook for :func:`book.train.fit` (``step_callbacks=[monitor]``):
    ``fit`` calls ``monitor(step, model, loss)`` after ``loss.backward()`` and before
    ``optimizer.step()``. At steps :math:`1, 1 + e, 1 + 2e, \dots` (:math:`e` = ``every``) it
    records, for every watched module named ``name`` (its name in ``model.named_modules()``):

    - ``grad_norms[name]``: :math:`\|\nabla_W L\|_2`, the Frobenius norm of the gradient of the
      module's ``weight`` (for modules that have a weight parameter; NaN when the weight has
      no gradient), the gradient the optimizer is about to use;
    - ``weight_norms[name]``: :math:`\|W\|_2`, before the update;
    - ``output_means[name]``, ``output_stds[name]``: the mean and (population) standard deviation
      of all entries of the module's output in this step's forward pass;
    - ``dead_fractions[name]``: the fraction of output units that are :math:`\le 0` for every
      sample of the batch. A unit is one entry of one sample's output: a feature of a
      ``Linear`` layer, one channel at one position of a convolution. The statistic is
      meaningful after a ReLU (where :math:`\le 0` means exactly 0 and no gradient), and it
      needs batches of more than a few samples.

    plus ``steps`` (the step numbers recorded) and ``losses`` (the loss of each recorded step).
    Each is a plain list of Python floats, one entry per recorded step.

    By default the watched modules are every layer of :data:`LAYER_TYPES` (``Linear``, ``Conv*``,
    ``ConvTranspose*``: gradient and weight norms, and the statistics of their outputs, the
    pre-activations) and every activation module of :data:`ACTIVATION_TYPES` (``ReLU``,
    ``Tanh``, ``Sigmoid``, ``GELU``, ...: output statistics). Pass ``modules`` to choose others:
    a module with a ``weight`` parameter gets norms, every module gets output statistics.

    The outputs are captured by forward hooks; a forward pass under ``torch.no_grad()`` (the
    evaluation ``fit`` does after each epoch) is ignored, and if the model is called several
    times in a step, the last grad-enabled call counts. Nothing that holds a graph is kept:
    the hooks store three detached numbers per module, and each recorded step moves all values
    to Python floats at once (one device synchronisation per recorded step).

    Args:
        model: the network to watch.
        modules: ``None`` for the defaults above, or an iterable of module names (as in
            ``model.named_modules()``, e.g. ``"0"`` or ``"encoder.fc1"``) or of submodules.
        every: record every ``every``-th step (the first step is always recorded).

    Use it as a context manager, or call :meth:`remove` to detach the hooks when done. Outside
    ``fit``, call it yourself after ``loss.backward()``: ``monitor(step, model, loss.item())``.

    Example:
        >>> net = nn.Sequential(nn.Linear(3, 5), nn.ReLU(), nn.Linear(5, 1))
        >>> with torch.no_grad():
        ...     _ = net[0].bias.fill_(-100.0)            # every ReLU unit dead
        >>> monitor = Monitor(net)
        >>> loss = net(torch.randn(32, 3)).pow(2).mean()
        >>> loss.backward()
        >>> monitor(1, net, loss.item())
        >>> monitor.dead_fractions["1"], monitor.grad_norms["0"]
        ([1.0], [0.0])
        >>> monitor.remove()
    """

    def __init__(self, model: nn.Module, modules=None, every: int = 1):
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        self.model = model
        self.every = checks.integer(every, "every", minimum=1)
        self.watched: dict[str, nn.Module] = self._resolve(model, modules)
        # Modules with a weight parameter get norms; every watched module gets output statistics.
        self.layers = [n for n, m in self.watched.items() if isinstance(getattr(m, "weight", None), nn.Parameter)]
        self.steps: list[int] = []
        self.losses: list[float] = []
        self.grad_norms: dict[str, list[float]] = {n: [] for n in self.layers}
        self.weight_norms: dict[str, list[float]] = {n: [] for n in self.layers}
        self.output_means: dict[str, list[float]] = {n: [] for n in self.watched}
        self.output_stds: dict[str, list[float]] = {n: [] for n in self.watched}
        self.dead_fractions: dict[str, list[float]] = {n: [] for n in self.watched}
        self._pending: dict[str, Tensor] = {}  # name -> [mean, std, dead] of the last forward pass
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in self.watched.items()]

    # -- setup ------------------------------------------------------------------------------

    @staticmethod
    def _resolve(model: nn.Module, modules) -> dict[str, nn.Module]:
        named = {(name or "model"): m for name, m in model.named_modules()}
        if modules is None:
            chosen = {n: m for n, m in named.items() if isinstance(m, LAYER_TYPES + ACTIVATION_TYPES)}
            if not chosen:
                raise ValueError("the model has no Linear, Conv or activation module to watch by default: "
                                 "pass modules=[...] with the names of the modules to watch")
            return chosen
        if isinstance(modules, (str, nn.Module)):
            modules = [modules]
        by_identity = {id(m): n for n, m in named.items()}
        chosen = {}
        for item in modules:
            if isinstance(item, str):
                if item not in named:
                    some = ", ".join(repr(n) for n in list(named)[:8])
                    raise ValueError(f"the model has no module named {item!r}; its modules are {some}, ...")
                chosen[item] = named[item]
            elif isinstance(item, nn.Module):
                if id(item) not in by_identity:
                    raise ValueError(f"{type(item).__name__} module is not part of the model")
                chosen[by_identity[id(item)]] = item
            else:
                raise TypeError(f"modules must be module names or modules, got {type(item).__name__}")
        if not chosen:
            raise ValueError("modules is empty: nothing to watch")
        return chosen

    def _hook(self, name: str):
        def hook(module, inputs, output):
            if torch.is_grad_enabled() and isinstance(output, Tensor):  # skip evaluation passes
                with torch.no_grad():
                    self._pending[name] = _output_stats(output)
        return hook

    # -- the step hook ----------------------------------------------------------------------

    def __call__(self, step: int, model: nn.Module | None = None, loss: float | None = None) -> None:
        """Record step ``step`` (if it is one to record); ``fit`` calls this after ``backward()``.

        ``model`` is ignored (the monitor watches the model it was built with); ``loss`` is
        stored in :attr:`losses` (NaN when omitted).
        """
        step = checks.integer(step, "step")
        pending, self._pending = self._pending, {}
        if (step - 1) % self.every != 0:
            return
        values = []  # 0-dim tensors, moved to Python in one go
        for name in self.layers:
            w = self.watched[name].weight
            grad = torch.linalg.vector_norm(w.grad) if w.grad is not None else torch.tensor(_NAN)
            values += [grad, torch.linalg.vector_norm(w.detach())]
        for name in self.watched:
            stats = pending.get(name)
            values += list(stats) if stats is not None else [torch.tensor(_NAN)] * 3
        device = next((v.device for v in values if v.device.type != "cpu"), torch.device("cpu"))
        numbers = torch.stack([v.detach().to(device) for v in values]).tolist() if values else []
        it = iter(numbers)
        for name in self.layers:
            self.grad_norms[name].append(next(it))
            self.weight_norms[name].append(next(it))
        for name in self.watched:
            self.output_means[name].append(next(it))
            self.output_stds[name].append(next(it))
            self.dead_fractions[name].append(next(it))
        self.steps.append(step)
        self.losses.append(float(loss) if loss is not None else _NAN)

    # -- results ----------------------------------------------------------------------------

    def table(self, step: int | None = None) -> str:
        """The values of one recorded step as a table, one row per watched module.

        Args:
            step: the step number (one of :attr:`steps`); the last recorded step if ``None``.
        """
        if not self.steps:
            return "Monitor: nothing recorded yet"
        if step is None:
            k = len(self.steps) - 1
        elif step in self.steps:
            k = self.steps.index(step)
        else:
            raise ValueError(f"step {step} was not recorded; recorded steps run from {self.steps[0]} "
                             f"to {self.steps[-1]} every {self.every}")

        def fmt(v):
            return f"{v:11.4g}"

        width = max(6, *(len(n) for n in self.watched))
        lines = [f"step {self.steps[k]} (loss {self.losses[k]:.4g})",
                 f"{'module':<{width}s} {'type':<10s} {'grad norm':>11s} {'weight norm':>11s} "
                 f"{'out mean':>11s} {'out std':>11s} {'dead':>6s}"]
        for name, module in self.watched.items():
            g = fmt(self.grad_norms[name][k]) if name in self.grad_norms else f"{'-':>11s}"
            w = fmt(self.weight_norms[name][k]) if name in self.weight_norms else f"{'-':>11s}"
            lines.append(f"{name:<{width}s} {type(module).__name__[:10]:<10s} {g} {w} "
                         f"{fmt(self.output_means[name][k])} {fmt(self.output_stds[name][k])} "
                         f"{self.dead_fractions[name][k]:6.1%}")
        return "\n".join(lines)

    def summary(self) -> str:
        """The table of the last recorded step, with how many steps were recorded."""
        return f"{self!r}\n{self.table()}"

    def __repr__(self) -> str:
        return (f"Monitor({len(self.watched)} modules, {len(self.layers)} with weights, every={self.every}, "
                f"{len(self.steps)} steps recorded{', hooks removed' if not self._handles else ''})")

    # -- cleanup ----------------------------------------------------------------------------

    def remove(self) -> None:
        """Detach the forward hooks (the records stay). Calling it twice is harmless."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        self._pending = {}

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()
