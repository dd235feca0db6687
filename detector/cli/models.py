"""``python -m detector models push | list | promote | shadow | unshadow | rollback``: the model
registry from the command line (``backtest``: ``cli/backtest.py``). Each takes the Kafka
connection settings as ``run`` does."""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from typing import TYPE_CHECKING

from detector.cli import backtest
from detector.cli.common import Command
from detector.errors import UsageError
from detector.model.cards import detects, family, missed_target
from detector.settings.fields import Parser, add_options, build
from detector.settings.registry import RegistrySettings

if TYPE_CHECKING:
    from detector.kafka.registry import RegistryState


def _registry(args: argparse.Namespace):  # type: ignore[no-untyped-def]
    from detector.kafka import acl
    from detector.kafka.registry import Registry

    s = build(RegistrySettings, args, "DETECTOR")
    acl.check(s.kafka, acl.registry(s, writes=args.action != "list"))
    return Registry(*_where(args))


def _where(args: argparse.Namespace) -> tuple:
    s = build(RegistrySettings, args, "DETECTOR")
    return s.kafka, s.models_topic, s.replication_factor


def cmd_push(args: argparse.Namespace) -> int:
    """Validate a model (its .tflite and card beside it) and publish it as the next version."""
    from detector.model.files import (
        ModelError,
        current_tflite,
        read_card,
        resolve_model_path,
        sha256,
    )
    from detector.model.serving import ModelStep

    path = resolve_model_path(args.file)  # a shipped name, or a .keras file that is a model
    keras_sha = sha256(path)
    tflite = current_tflite(path, keras_sha)
    if tflite is None:
        raise ModelError(f"{path} has no current .tflite beside it (missing, or its card says it "
                         f"was converted from another .keras): python -m detector convert "
                         f"--model {path}")
    card = read_card(path)
    content = tflite.read_bytes()
    ModelStep.from_tflite(content, card, args.name, where=str(path))  # fits, and answers
    registry = _registry(args)
    try:
        state = registry.state()
        digest = hashlib.sha256(content).hexdigest()
        known = [v for (n, _), v in sorted(state.versions.items())
                 if n == args.name and v.sha256 == digest]
        if not known:
            _check(args, str(path), card, state, "push")
        version, live = registry.push(args.name, content, card, keras_sha)
    finally:
        registry.close()
    if known:
        print(f"{path} is {args.name} v{version.version} already (the same step): nothing "
              "pushed" + ("; it is live" if live else
                          f"; `python -m detector models promote {args.name} "
                          f"{version.version}` makes it live"))
    else:
        print(f"pushed {path} as {args.name} v{version.version}"
              + (" (nothing of that name was live: it is now)" if live else
                 f"; `python -m detector models promote {args.name} {version.version}` makes "
                 "it live"))
    print(json.dumps({"name": version.name, "version": version.version,
                      "sha256": version.sha256}))
    return 0


def _check(args: argparse.Namespace, what: str, card: dict, state: RegistryState,
           action: str) -> None:
    """Refuse (UsageError), unless ``--force``, a model whose card says it misses its target,
    or one that detects something else than the version live under the name: every detector
    following the name would serve it."""
    if args.force:
        return
    missed = missed_target(card)
    if missed:
        raise UsageError(f"{what} does not reach its target ({missed}): `models {action} ... "
                         "--force` to go on all the same")
    pointer = state.pointers.get(args.name)
    if pointer is not None and pointer.live is not None:
        live = state.version(args.name, pointer.live)
        if family(live.card) != family(card):
            raise UsageError(f"{args.name} serves {detects(live.card)} (v{live.version} live); "
                             f"{what} detects {detects(card)}: `models {action} ... --force` "
                             "to go on all the same")


def cmd_list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    try:
        state = registry.state()
    finally:
        registry.close()
    names = sorted({n for n, _ in state.versions} | set(state.pointers))
    out = {}
    for name in names:
        pointer = state.pointers.get(name)
        out[name] = {
            "live": pointer.live if pointer else None,
            "candidate": pointer.candidate if pointer else None,
            "previous": pointer.previous if pointer else [],
            "versions": [{"version": v.version, "sha256": v.sha256,
                          "features": v.card.get("features"), "pattern": v.card.get("pattern"),
                          "pushed_at": v.pushed_at}
                         for (n, _), v in sorted(state.versions.items()) if n == name],
        }
    if args.json:
        print(json.dumps(out))
        return 0
    if not out:
        print(f"the registry {_where(args)[1]} holds no model")
    for name, info in out.items():
        print(f"{name}: live v{info['live']}, candidate "
              f"{'v' + str(info['candidate']) if info['candidate'] else 'none'}")
        for v in info["versions"]:
            role = ("live" if v["version"] == info["live"] else
                    "candidate" if v["version"] == info["candidate"] else "")
            when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(v["pushed_at"]))
            print(f"  v{v['version']:<4} {v['features'] or '?':<7} {v['pattern'] or '':<12} "
                  f"{v['sha256'][:12]}  {when} UTC  {role}")
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    registry = _registry(args)
    try:
        gone = registry.prune(args.name, args.keep)
    finally:
        registry.close()
    print(f"{args.name}: deleted {len(gone)} version(s)"
          + (f" ({', '.join(f'v{v}' for v in gone)})" if gone else "")
          + "; kept the live one, the candidate, the rollback list and the newest "
          f"{args.keep}")
    return 0


def _change(action: str):  # type: ignore[no-untyped-def]
    def run(args: argparse.Namespace) -> int:
        registry = _registry(args)
        try:
            if action == "promote":
                state = registry.state()
                version = state.version(args.name, args.version)
                _check(args, f"{args.name} v{args.version}", version.card, state, action)
            pointer = registry.change(args.name, action, getattr(args, "version", None))
        finally:
            registry.close()
        print(f"{args.name}: live v{pointer.live}, candidate "
              f"{'v' + str(pointer.candidate) if pointer.candidate else 'none'}")
        return 0
    return run


def add_commands(command: Command) -> None:
    models = command("models", lambda _: 2, "The model registry: push versions, and promote, "
                     "shadow or roll back what running detectors serve.")
    sub = models.add_subparsers(dest="action", required=True, metavar="ACTION",
                                parser_class=Parser, help="what to do with the registry")

    def action(name: str, fn, help: str) -> argparse.ArgumentParser:  # type: ignore[no-untyped-def]
        sp = sub.add_parser(name, help=help, description=help)
        sp.set_defaults(fn=fn)
        add_options(sp, RegistrySettings, "DETECTOR")
        return sp

    push = action("push", cmd_push, "Validate a model and publish it as the next version of "
                  "NAME (its .tflite and card beside it go with it); the first version of a name "
                  "is live at once.")
    push.add_argument("file", metavar="FILE", help="a .keras file, or a shipped model's name")
    push.add_argument("--name", required=True, help="the name detectors follow (--model NAME)")
    push.add_argument("--force", action="store_true", help="push a model whose card says it "
                      "misses its target, or that detects something else than the live version "
                      "of NAME")
    listing = action("list", cmd_list, "The names, their versions, and which are live.")
    listing.add_argument("--json", action="store_true", help="one JSON object")
    for name, help in (("promote", "Make VERSION live: every detector following NAME swaps to "
                        "it at its next checkpoint."),
                       ("shadow", "Run VERSION beside the live one, on the same events: its "
                        "agreement in the metrics.")):
        sp = action(name, _change(name), help)
        sp.add_argument("name", metavar="NAME")
        sp.add_argument("version", metavar="VERSION", type=int)
        if name == "promote":
            sp.add_argument("--force", action="store_true", help="promote a version whose card "
                            "says it misses its target, or that detects something else than "
                            "the live one")
    prune = action("prune", cmd_prune, "Delete old versions of NAME from the registry (their "
                   "records tombstoned): all but the live one, the candidate, those a rollback "
                   "can go back to, and the newest --keep.")
    prune.add_argument("name", metavar="NAME")
    prune.add_argument("--keep", type=int, default=3, help="newest versions to keep")
    for name, help in (("unshadow", "Stop the candidate's shadow."),
                       ("rollback", "Back to the version live before the current one.")):
        sp = action(name, _change(name), help)
        sp.add_argument("name", metavar="NAME")
    backtest.add_backtest(sub)
