"""hf_datamix: decide, during language-model training, which data the model trains on next.

The public API (imported lazily, so ``import hf_datamix`` stays cheap):

* :class:`Mixture`, :class:`DomainSpec`, :class:`DomainSet`, :class:`DomainUpdate`
* :class:`Interleaver`
* :class:`DataMixTrainer`, :class:`DataMixArguments`, :class:`MixingController`
* :class:`DataMixSFTTrainer`, :class:`DataMixSFTConfig` (instruction tuning on TRL)
* :class:`Strategy`, :class:`StrategyConfig`, :class:`Decision`, :class:`DecisionContext`,
  :func:`available_strategies`, :func:`register_strategy`, :func:`create_strategy`,
  :func:`get_strategy_class`
* the mixing loop: :class:`Simulator`, :class:`Simulation`, :func:`available_simulators`,
  :func:`register_simulator`; :class:`ProposerConfig`, :func:`decide`; :class:`ComposedStrategy`
* :class:`ComputeLedger`
"""

from importlib import import_module


__version__ = "0.1.0"

_EXPORTS = {
    "Mixture": "mixture",
    "DomainSpec": "domains",
    "DomainSet": "domains",
    "DomainUpdate": "domains",
    "Interleaver": "data.interleaver",
    "DataMixTrainer": "trainer",
    "DataMixArguments": "config",
    "DataMixSFTTrainer": "sft",
    "DataMixSFTConfig": "sft",
    "MixingController": "callbacks",
    "Strategy": "strategies.base",
    "StrategyConfig": "strategies.base",
    "Decision": "strategies.base",
    "DecisionContext": "strategies.base",
    "available_strategies": "strategies.registry",
    "register_strategy": "strategies.registry",
    "create_strategy": "strategies.registry",
    "get_strategy_class": "strategies.registry",
    "ComposedStrategy": "strategies.composed",
    "Simulator": "simulate.base",
    "Simulation": "simulate.base",
    "available_simulators": "simulate.base",
    "register_simulator": "simulate.base",
    "ProposerConfig": "proposer",
    "decide": "proposer",
    "ComputeLedger": "compute",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        value = getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'hf_datamix' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
