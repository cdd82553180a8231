"""configkit: the strict-config helpers shared by ``pinclip.config``, ``sampling.config`` and
``training.config`` (see :mod:`configkit.strict`). Imports none of the toolkit's packages."""
from configkit.strict import (NonFiniteError, StrictConfigError, WrongTypeError, blamed_override, closest_key,
                              coerce, dataclass_keys, key_in_message, nonfinite_floats, parse_override,
                              read_yaml_mapping, set_dotted, split_override, unknown_key_error)

__all__ = ["StrictConfigError", "WrongTypeError", "NonFiniteError", "closest_key", "unknown_key_error",
           "dataclass_keys", "coerce", "nonfinite_floats", "read_yaml_mapping", "split_override",
           "parse_override", "set_dotted", "blamed_override", "key_in_message"]
