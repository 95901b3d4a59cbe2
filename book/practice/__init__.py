"""Training in practice (chapter 10): initialization, gradient clipping, gradient checks, a training
monitor, and hyperparameter search by hand and on a tabular benchmark for Optuna.

The clipping functions and initializers have ``torch.nn.utils``'s and ``torch.nn.init``'s names
and arguments and return the same values. The modules:

- :mod:`book.practice.clip`: ``clip_grad_norm_``, ``clip_grad_value_``, ``grad_norm``;
- :mod:`book.practice.init`: ``xavier_uniform_``, ``xavier_normal_``, ``kaiming_uniform_``,
  ``kaiming_normal_``, ``lecun_normal_``, ``calculate_gain``, ``fans``;
- :mod:`book.practice.gradcheck`: ``gradient_check`` by central differences in float64;
- :mod:`book.practice.monitor`: ``Monitor``, a step hook for :func:`book.train.fit`;
- :mod:`book.practice.search`: ``grid_search``, ``random_search``, ``successive_halving``;
- :mod:`book.practice.benchmark`: ``train_grid`` (a grid of configurations trained at once) and
  the ``TabularBenchmark`` that Optuna's samplers query, with parallel workers.
"""

from book.practice.benchmark import (TabularBenchmark, epochs_used, initial_weights, make_sampler, optuna_worker,
                                     run_parallel_study, train_grid)
from book.practice.clip import clip_grad_norm_, clip_grad_value_, grad_norm
from book.practice.gradcheck import GradientCheck, GradientCheckError, gradient_check
from book.practice.init import (calculate_gain, fans, kaiming_normal_, kaiming_uniform_, lecun_normal_,
                                xavier_normal_, xavier_uniform_)
from book.practice.monitor import Monitor
from book.practice.search import (Choice, LogUniform, SearchResult, Trial, Uniform, choice, grid_search,
                                  halving_schedule, log_uniform, random_search, sample_config, successive_halving,
                                  uniform)

__all__ = [
    "clip_grad_norm_", "clip_grad_value_", "grad_norm",
    "calculate_gain", "fans", "xavier_uniform_", "xavier_normal_", "kaiming_uniform_", "kaiming_normal_",
    "lecun_normal_",
    "gradient_check", "GradientCheck", "GradientCheckError",
    "Monitor",
    "log_uniform", "uniform", "choice", "LogUniform", "Uniform", "Choice", "sample_config", "Trial", "SearchResult",
    "grid_search", "random_search", "halving_schedule", "successive_halving",
    "train_grid", "TabularBenchmark", "initial_weights", "epochs_used", "make_sampler", "optuna_worker",
    "run_parallel_study",
]
