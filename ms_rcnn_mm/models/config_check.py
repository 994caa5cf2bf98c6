"""Build-time checks of the heads' configs, with messages that say what to
write instead."""
import inspect
from typing import Iterable, List

#: parameter kinds a config key can fill
NAMED = (inspect.Parameter.POSITIONAL_OR_KEYWORD,
         inspect.Parameter.KEYWORD_ONLY)


def valid_keys(cls: type) -> List[str]:
    """Config keys ``cls`` takes: the named arguments of its ``__init__`` and,
    as long as an ``__init__`` passes ``**kwargs`` on, of its parents'."""
    keys = set()
    for klass in cls.__mro__:
        if '__init__' not in vars(klass):
            continue
        params = inspect.signature(klass.__init__).parameters.values()
        keys.update(p.name for p in params
                    if p.kind in NAMED and p.name != 'self')
        if not any(p.kind == inspect.Parameter.VAR_KEYWORD for p in params):
            break
    return sorted(keys)


def check_keys(cls: type, keys: Iterable[str]) -> None:
    """Reject config keys that ``cls`` does not take.

    Raises:
        TypeError: some keys are unknown; the message lists them and every
            valid key.
    """
    valid = valid_keys(cls)
    unknown = sorted(set(keys) - set(valid))
    if unknown:
        raise TypeError(
            f'{cls.__name__} has no config key {", ".join(unknown)}; valid '
            f'keys are {", ".join(valid)}')
