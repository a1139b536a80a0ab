"""``--help`` with the options in named groups (data, optimisation, distillation, model loading, output, ...).

Help is click's plain text (rich markup is off: brackets and colons in help strings are text), which has one
"Options" section; :class:`GroupedHelp` writes one section per group instead, in the order the groups first
appear in the verb's signature, then "Model and loading" and "Output". An option's group is typer's ``rich_help_panel``, set where the option is
defined (``cli/options.py`` for the shared ones, or per verb with :func:`in_group`); ``--help`` itself, and an
option without a group, come last under "Other options".
"""

from __future__ import annotations

import copy
from typing import Annotated, Any, get_args

from typer.core import TyperCommand

OTHER = "Other options"
# after the verb's own groups (which keep the order of their first option in the signature)
LAST = ("Model and loading", "Output", OTHER)


def in_order(groups: dict[str, Any]) -> list[str]:
    """The group names of a verb in the order its help shows them: its own groups in the order of their first
    option, then "Model and loading", "Output" and the rest."""
    return sorted(groups, key=lambda g: LAST.index(g) + 1 if g in LAST else 0)  # a stable sort


class GroupedHelp(TyperCommand):
    """A verb whose ``--help`` lists its options by group."""

    def format_options(self, ctx: Any, formatter: Any) -> None:
        groups: dict[str, list[tuple[str, str]]] = {}
        arguments = []
        for param in self.get_params(ctx):
            record = param.get_help_record(ctx)
            if record is None:
                continue
            if param.param_type_name == "argument":
                arguments.append(record)
            else:
                groups.setdefault(getattr(param, "rich_help_panel", None) or OTHER, []).append(record)
        if arguments:
            with formatter.section("Arguments"):
                formatter.write_dl(arguments)
        for name in in_order(groups):
            with formatter.section("Options" if list(groups) == [OTHER] else name):
                formatter.write_dl(groups[name])


def in_group(option: Any, group: str) -> Any:
    """``option`` (an ``Annotated[type, typer.Option(...)]`` defined once in ``cli/options.py``) shown under
    ``group`` in this verb's help: a copy, so the shared definition and its other verbs are unchanged."""
    base, info = get_args(option)
    info = copy.copy(info)
    info.rich_help_panel = group
    return Annotated[base, info]
