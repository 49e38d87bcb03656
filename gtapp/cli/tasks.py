"""`gtapp tasks list|show`: the generated task universe."""

from __future__ import annotations


def register(sub) -> None:
    p = sub.add_parser("tasks", help="list or show generated tasks")
    tsub = p.add_subparsers(dest="tasks_command", required=True)
    lst = tsub.add_parser("list", help="every generated task with its family, metric and sizes")
    lst.add_argument("--family", default=None)
    lst.add_argument("--seed", type=int, default=0)
    lst.add_argument("--n-train", type=int, default=512)
    lst.add_argument("--n-test", type=int, default=128)
    lst.set_defaults(func=_list)
    show = tsub.add_parser("show", help="a few examples of one task")
    show.add_argument("name")
    show.add_argument("--n", type=int, default=3)
    show.add_argument("--seed", type=int, default=0)
    show.set_defaults(func=_show)


def _list(args) -> int:
    from gtapp.tasks import FAMILIES, make_task, task_names

    if args.family is not None and args.family not in FAMILIES:
        raise ValueError(f"unknown family '{args.family}'; choose one of {', '.join(FAMILIES)}")
    print(f"{'task':<36} {'family':<12} {'metric':<12} {'train':>6} {'test':>6}")
    for name in task_names(args.family):
        t = make_task(name, seed=args.seed, n_train=args.n_train, n_test=args.n_test)
        print(f"{t.name:<36} {t.family:<12} {t.metric_name:<12} {len(t.train):>6} {len(t.test):>6}")
    return 0


def _show(args) -> int:
    from gtapp.tasks import make_task

    t = make_task(args.name, seed=args.seed, n_train=args.n, n_test=1)
    print(f"# {t.name} ({t.family}, metric {t.metric_name}): {t.description}")
    for e in t.train[: args.n]:
        print("-" * 60)
        print(f"{e.prompt}\x1b[1m{e.answer}\x1b[0m" if e.prompt else e.answer)
    return 0
