"""What every ``distill-*`` command does alike on the command line, before any heavy import: presets and keys
checked against Hydra's own search path and the composed config, and bad input answered with one line and
exit code 2 (Hydra's own composition errors included), never a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from omegaconf import OmegaConf

from distill.errors import ConfigError, close_matches

BAD_INPUT = 2  # the exit code of every refusal of bad input


def fail(message: object) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(BAD_INPUT)


class HydraCommand:
    """A ``@hydra.main`` function run as a command. ``task`` marks the start of the work, so that an exit with
    Hydra's code 1 before it (an override Hydra could not apply) becomes a refusal of bad input (code 2)."""

    def __init__(self, hydra_main: Callable[[], Any], conf_dir: Path, config_name: str) -> None:
        self.hydra_main, self.conf_dir, self.config_name = hydra_main, conf_dir, config_name
        self.started = False

    def task(self) -> None:
        self.started = True

    def __call__(self, argv: Sequence[str] | None = None) -> None:
        try:
            check_presets(sys.argv[1:] if argv is None else argv, self.conf_dir, self.config_name)
        except ConfigError as error:
            fail(error)
        try:
            self.hydra_main()
        except SystemExit as exit_:
            if exit_.code == 1 and not self.started:
                sys.exit(BAD_INPUT)
            raise


# Hydra's own groups also list options that ship with Hydra and its plugins: only ours are checked.
HYDRA_OWNED = ("hydra/", "hydra.")


def check_presets(argv: Sequence[str], conf_dir: Path, config_name: str = "train") -> None:
    """Unknown options of a config group (``student=resnet_nope``, ``-m loss=kd,nope``) with close matches.

    Hydra fails on these too, but with exit code 1 and its search path; this runs first, on the command
    line's overrides (sweeps included), so the error looks like every other bad value. The options are
    read from Hydra's own search path, as the app will compose it: ``conf_dir``, Hydra's plugins,
    ``--config-dir``/``-cd`` and ``hydra.searchpath=[...]`` given on the command line.
    """
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import create_config_search_path, get_args_parser
    from hydra.core.config_search_path import SearchPathQuery
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        args, _ = get_args_parser().parse_known_args(list(argv))
    except SystemExit:  # an unknown flag: Hydra's own parser says which
        return
    if args.shell_completion or args.hydra_help or args.info:  # no job config is composed from the overrides
        return
    try:
        parsed = OverridesParser.create().parse_overrides(list(args.overrides))
    except OverrideParseException as error:
        raise ConfigError(f"cannot read the override {error.override!r}: {str(error).splitlines()[0]} (quote values "
                          "with brackets, commas or spaces; grammar: hydra.cc/docs/advanced/override_grammar/basic)"
                          ) from None
    search_path = create_config_search_path(str(conf_dir))
    if args.config_dir is not None:
        config_dir = Path(args.config_dir).expanduser().resolve()
        if not config_dir.is_dir():
            raise ConfigError(f"--config-dir {args.config_dir}: no such folder ({config_dir})")
        search_path.prepend("command-line", f"file://{config_dir}", anchor=SearchPathQuery(provider="schema"))
    for override in parsed:
        value = override.value()
        if override.get_key_element() == "hydra.searchpath" and isinstance(value, list):
            for entry in value:
                search_path.append("hydra.searchpath in command-line", str(entry))
    loader = ConfigLoaderImpl(config_search_path=search_path)
    # Read again with the loader: a glob sweep (``loss=glob(*,exclude=[fsp])``) lists the group's options through it.
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(list(args.overrides))
    group_overrides = []
    for override in parsed:
        group = override.key_or_group
        if group.startswith(HYDRA_OWNED) or override.is_delete():
            continue
        options = loader.get_group_options(group)
        if not options:  # not a config group: a value such as seed=1 or loss.kd.temperature=8
            continue
        group_overrides.append(override)
        values = list(override.sweep_string_iterator()) if override.is_sweep_override() else [override.value()]
        values = [v for value in values for v in (value if isinstance(value, list) else [value])]  # loss=[kd,at]
        if not values:  # a glob that matches nothing
            raise ConfigError(f"{override.input_line} selects no preset of '{group}'; available: {', '.join(options)}")
        for value in values:
            if value is None or str(value) in options:
                continue
            hint = close_matches(str(value), options)
            raise ConfigError(f"{group}={value} is not a preset of '{group}'"
                              + (f" (did you mean {hint}?)" if hint else "")
                              + f"; available: {', '.join(options)} (conf/{group}/, or a folder added with "
                              "--config-dir)")
    check_keys(loader, config_name, parsed, group_overrides)


def check_keys(loader: Any, config_name: str, parsed: list[Any], group_overrides: list[Any]) -> None:
    """``trainer.max_epoch=3``: a key the composed config does not have, named with its close matches.

    The config is composed with the command line's presets (a sweep's first option) and its ``+key``,
    ``++key`` and ``~key`` overrides, then every plain ``key=value`` is looked up in it.
    """
    from hydra.types import RunMode

    def plain(override: Any) -> bool:
        return (override.get_key_element() == override.key_or_group
                and not any(override is group for group in group_overrides))

    composed = [_single(o) for o in parsed if not plain(o)]
    try:
        cfg = loader.load_configuration(config_name, composed, RunMode.RUN)
    except Exception:  # a composition that fails here fails in Hydra too, with its own message
        return
    for override in parsed:
        key = override.key_or_group
        if not plain(override) or key.startswith(HYDRA_OWNED) or has_key(cfg, key):
            continue
        siblings = sibling_keys(cfg, key)
        if siblings is None:
            continue  # below a value or a list: Hydra's message is the clearer one
        raise ConfigError(unknown_key(key, siblings) + f"; to add it, write +{key}=...; to see every key: --cfg job")


def sibling_keys(cfg: Any, key: str) -> list[str] | None:
    """The dotted keys of the deepest node of ``cfg`` on ``key``'s path (the close matches of a key that is not
    there); None when that node is a value or a list, not a mapping."""
    missing = object()
    parent = key
    while "." in parent:
        parent = parent.rpartition(".")[0]
        node = OmegaConf.select(cfg, parent, default=missing)
        if node is not missing:
            break
    else:
        parent, node = "", cfg
    if not OmegaConf.is_dict(node):
        return None
    return [f"{parent}.{name}" if parent else str(name) for name in node]


def unknown_key(key: str, siblings: list[str]) -> str:
    """``<key> is not a key of the config (did you mean <close matches>?)``."""
    hint = close_matches(key, siblings)
    return f"{key} is not a key of the config" + (f" (did you mean {hint}?)" if hint else "")


def has_key(cfg: Any, key: str) -> bool:
    """Whether ``key`` is in ``cfg``, also when its value is mandatory and not yet given (``root: ???``), which
    ``OmegaConf.select`` reports as absent."""
    from omegaconf.errors import MissingMandatoryValue

    missing = object()
    try:
        return OmegaConf.select(cfg, key, default=missing, throw_on_missing=True) is not missing
    except MissingMandatoryValue:
        return True


def _single(override: Any) -> str:
    """The override as Hydra reads it for one job: a sweep's first option, anything else as typed."""
    if not override.is_sweep_override():
        return str(override.input_line)
    return f"{override.get_key_element()}={next(iter(override.sweep_string_iterator()))}"
