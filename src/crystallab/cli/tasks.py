"""`crystallab tasks [ID] [--json]`: list the tasks, or print one."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tasks",
        help="list the tasks, or print one as JSON",
        description=(
            "List the built-in (and --tasks-dir) tasks with option, prompt and family counts, or print one task."
        ),
    )
    p.add_argument("id", nargs="?", help="a task id: print this task")
    p.add_argument("--json", action="store_true", help="print JSON (the task, or the list)")
    p.add_argument("--tasks-dir", help="a folder of extra task YAML files (overrides built-ins of the same id)")
    p.set_defaults(run=run)


def _families(sizes: dict[str, int]) -> str:
    """``qa 3, code 3`` (each family and its number of prompts)."""
    return ", ".join(f"{f} {n}" for f, n in sizes.items())


def run(args: argparse.Namespace) -> int:
    from crystallab.suite import load_task, task_ids

    if args.id:
        task = load_task(args.id, args.tasks_dir)
        if args.json:
            print(
                json.dumps(task.to_json(), indent=2, ensure_ascii=False)
            )  # a task file's keys: each prompt names its family
        else:
            sizes = task.family_sizes()
            print(f"{task.id} (version {task.version}): {task.description}")
            if task.is_open:
                print(f"  open-ended: sampled, cut at the first {task.stop_at} (at most {task.max_tokens} tokens), "
                      "clustered into semantic options (docs/open.md)")  # fmt: skip
            else:
                print(f"  options ({len(task.options)}): {', '.join(task.labels)}")
            print(f"  contexts: {len(task.contexts)} in {len(sizes['raw'])} raw families: {_families(sizes['raw'])}")
            print(
                f"  instructions: {len(task.instructions)} in {len(sizes['chat'])} chat families: "
                f"{_families(sizes['chat'])}"
            )
        return 0
    tasks = [load_task(i, args.tasks_dir) for i in task_ids(args.tasks_dir)]
    if args.json:
        rows = []
        for t in tasks:
            sizes = t.family_sizes()
            rows.append(
                {
                    "id": t.id,
                    "version": t.version,
                    "kind": t.kind,
                    "options": len(t.options),
                    "instructions": len(t.instructions),
                    "contexts": len(t.contexts),
                    "families": len(t.families),
                    "chat_families": len(t.chat_families),
                    "family_sizes": sizes,
                }
            )
        print(json.dumps(rows, indent=2))
        return 0
    print(
        f"{'task':<22}{'ver':>4}{'options':>9}{'instr.':>8}{'chat fam.':>11}"
        f"{'contexts':>10}{'raw fam.':>10}  description"
    )
    for t in tasks:
        sizes = t.family_sizes()
        n_opts = "open" if t.is_open else len(t.options)
        print(
            f"{t.id:<22}{t.version:>4}{n_opts:>9}{len(t.instructions):>8}{len(sizes['chat']):>11}"
            f"{len(t.contexts):>10}{len(sizes['raw']):>10}  {t.description}"
        )
        print(f"{'':<4}raw:  {_families(sizes['raw'])}")
        print(f"{'':<4}chat: {_families(sizes['chat'])}")
    return 0
