"""One registry mechanism for the user-facing families (losses, optimizers, layers, metrics,
schedules), and configs read from constructor signatures.

``Registry(kind)`` knows classes by class name (what a saved model records and ``load_model``
looks up, exactly) and by case-insensitive names and aliases (what ``compile("adam", "mse")``
and ``get`` accept). ``get`` takes an instance (returned as is), a name (a new default instance)
or a ``{"class_name": ..., "config": {...}}`` dict (``cls.from_config(config)``).

``Configurable.get_config`` returns the constructor's arguments read back from the attributes of
the same names (``inspect.signature(type(self).__init__)``), so a class stores its arguments
under their own names and writes no ``get_config``; ``from_config(config)`` is ``cls(**config)``.
"""
import inspect


class Registry:
    """Classes of one kind (``"loss"``, ``"optimizer"``...) by class name and by alias."""

    def __init__(self, kind, base=None, hint=""):
        self.kind, self.base, self.hint = kind, base, hint
        self.classes = {}          # class name -> class (saved models)
        self.names = {}            # lower-case name or alias -> class
        self.presets = {}          # lower-case name -> (class, constructor kwargs)

    def register(self, cls, *aliases, **kwargs):
        """Know ``cls`` by its class name and by ``aliases`` (any case); aliases given ``kwargs``
        are presets, building ``cls(**kwargs)``. Returns ``cls`` (usable as a decorator)."""
        if kwargs:
            self.presets.update((name.lower(), (cls, kwargs)) for name in aliases)
            return cls
        self.classes[cls.__name__] = cls
        self.names.update((name.lower(), cls) for name in aliases)
        return cls

    def decorator(self, *aliases):
        """``@registry.decorator("alias")``: ``register`` as a class decorator."""
        return lambda cls: self.register(cls, *aliases)

    def known(self):
        return sorted([n for n, cls in self.names.items() if not getattr(cls, "_name_error", None)]
                      + list(self.presets))

    def get(self, identifier):
        """An instance from an instance, a registered name or a ``{"class_name", "config"}``
        dict; ValueError listing the valid names otherwise."""
        if self.base is not None and isinstance(identifier, self.base):
            return identifier
        if isinstance(identifier, dict):
            return self.deserialize(identifier)
        key = identifier.lower() if isinstance(identifier, str) else None
        if key in self.presets:
            cls, kwargs = self.presets[key]
            return cls(**kwargs)
        if key in self.names or identifier in self.classes:   # a name, or a class name (Keras)
            cls = self.names[key] if key in self.names else self.classes[identifier]
            if getattr(cls, "_name_error", None):
                raise ValueError(f"{self.kind} {identifier!r}: {cls._name_error}")
            return cls()
        raise ValueError(f"unknown {self.kind} {identifier!r}; valid names are "
                         f"{', '.join(self.known())}")

    def lookup(self, class_name):
        """The class registered under ``class_name`` (exactly, as saved)."""
        if class_name not in self.classes:
            raise ValueError(f"unknown {self.kind} {class_name!r}; known: "
                             f"{', '.join(sorted(self.classes))}{self.hint}")
        return self.classes[class_name]

    def deserialize(self, entry):
        """An instance from ``{"class_name": ..., "config": {...}}``."""
        if not isinstance(entry, dict) or "class_name" not in entry:
            raise ValueError(f"bad {self.kind} entry {entry!r}: expected a dict with 'class_name' "
                             f"and 'config'")
        cls, config = self.lookup(entry["class_name"]), entry.get("config", {})
        if not isinstance(config, dict):
            raise ValueError(f"the config of {self.kind} {entry['class_name']!r} must be a dict; "
                             f"received {config!r}")
        return cls.from_config(config)


def serialize(obj):
    """``{"class_name": ..., "config": obj.get_config()}``."""
    return {"class_name": type(obj).__name__, "config": obj.get_config()}


def signature_names(cls):
    """Names of the keyword-passable arguments of the constructor of ``cls`` (its
    ``__signature__`` when it declares one; no *args, **kwargs)."""
    return [n for n, p in inspect.signature(cls).parameters.items()
            if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


class Configurable:
    """``get_config`` from the constructor's signature, ``from_config`` = ``cls(**config)``.
    An argument the object keeps no attribute for is left out (its default rebuilds it).

    ``_config_extra`` names arguments a base class takes through ``**kwargs`` that belong in the
    config too.
    """

    _config_extra = ()

    def get_config(self):
        names = dict.fromkeys(signature_names(type(self)) + list(self._config_extra))
        return {n: getattr(self, n) for n in names if hasattr(self, n)}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


class Declared(Configurable):
    """Constructor arguments declared as a table instead of written as an ``__init__``:
    ``_declared()`` lists (argument, default, check) in order (``_keyword_only`` names those that
    cannot be positional); the class' signature is generated from it (so ``inspect``,
    ``get_config`` and positional calls work), unless the class writes its own ``__init__``.
    ``_bind(args, kwargs)`` binds a call's arguments to it: {argument: value}, defaults applied.
    """

    __signature__ = None
    _keyword_only = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__signature__ = None if "__init__" in vars(cls) else cls._declared_signature()

    @classmethod
    def _declared(cls):
        return []

    @classmethod
    def _declared_signature(cls):
        kind = inspect.Parameter
        return inspect.Signature([
            kind(n, kind.KEYWORD_ONLY if n in cls._keyword_only else kind.POSITIONAL_OR_KEYWORD,
                 default=d) for n, d, _ in cls._declared()])

    def _bind(self, args, kwargs):
        sig = type(self)._declared_signature()
        try:
            bound = sig.bind(*args, **kwargs)
        except TypeError as e:
            raise TypeError(f"{type(self).__name__}{sig}: {e}") from None
        bound.apply_defaults()
        return bound.arguments
