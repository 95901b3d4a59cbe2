r"""Optimizers, written to be read and checked against ``torch.optim``.

Each optimizer comes in two layers:

- a **functional kernel** in :mod:`book.optim.functional` that updates one parameter tensor
  from its gradient and an explicit state (a momentum buffer, running averages ...), one
  formula per line. This is the readable ground truth, and what the chapters show;
- a **multi-tensor kernel** (``adam_foreach``, ...) that applies the same operations, in the
  same order, to lists of tensors with ``torch._foreach_*`` ops: the fast path the classes
  take by default (``foreach=None``), tested equal to the single-tensor kernel;
- a **class** (:class:`SGD`, :class:`Adam`, ...) that is a thin :class:`torch.optim.Optimizer` subclass: it
  validates the hyperparameters, keeps the state per parameter under PyTorch's own keys
  (``momentum_buffer``, ...), loops over the parameter groups and calls the kernel. Parameter
  groups, ``zero_grad``, ``state_dict`` and ``load_state_dict`` are inherited unchanged, so a
  ``book.optim`` optimizer is a drop-in replacement for its ``torch.optim`` namesake and its
  state compares key by key with PyTorch's.

    >>> import torch
    >>> from book.optim import SGD
    >>> model = torch.nn.Linear(3, 1)
    >>> opt = SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> loss = model(torch.ones(2, 3)).pow(2).mean()
    >>> loss.backward()
    >>> opt.step()
    >>> sorted(opt.state[model.weight])
    ['momentum_buffer']
"""

from book.optim import functional
from book.optim.adadelta import Adadelta
from book.optim.adagrad import Adagrad
from book.optim.adam import Adam, AdamW
from book.optim.adamax import Adamax
from book.optim.frontier import Adafactor, Muon
from book.optim.large_batch import LAMB, LARS
from book.optim.lion import Lion
from book.optim.multi import MultiOptimizer, muon_with_adamw
from book.optim.nadam import NAdam
from book.optim.radam import RAdam
from book.optim.rmsprop import RMSprop
from book.optim.schedulefree import ScheduleFreeAdamW, ScheduleFreeSGD
from book.optim.sgd import SGD

__all__ = ["SGD", "Adagrad", "RMSprop", "Adadelta", "Adam", "AdamW", "NAdam", "RAdam", "Adamax", "Adafactor", "Muon",
           "Lion", "MultiOptimizer", "muon_with_adamw", "ScheduleFreeSGD", "ScheduleFreeAdamW", "LARS", "LAMB", "functional"]
