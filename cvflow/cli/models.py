"""`cvflow models`: the models and the weights each takes."""
from __future__ import annotations


def register(sub) -> None:
    """Add `cvflow models` to the subcommands `sub`."""
    p = sub.add_parser("models", help="list the models and their weights",
                       description="List the models and the weights each takes: tags, training data, "
                                   "published metrics, licences, where each file comes from.")
    p.add_argument("--names", action="store_true", help="only the model names, one per line")
    p.set_defaults(func=cmd_models)


def cmd_models(args) -> int:
    import cvflow

    if args.names:
        print("\n".join(cvflow.list_models()))
        return 0
    for model in cvflow.list_models(verbose=True):
        default = f"  (weights=None: {model['default']})" if model["default"] else ""
        print(f"{model['name']}  {model['description']}{default}")
        for w in model["weights"]:
            name = f"weights={w['tag']!r}" if w["tag"] else "release file"
            print(f"  {name}{' [default]' if w['default'] else ''}: {w['file']}")
            if w["data"]:
                print(f"    data: {w['data']}; trained by {w['trained_by']}")
            if w["metrics"]:
                print("    published: " + "; ".join(f"{bench} " + ", ".join(f"{k} {v}" for k, v in m.items())
                                                for bench, m in w["metrics"].items()))
            print(f"    licence: {w['license']}")
            print(f"    from: {w['url'] or w['source']}")
    return 0
