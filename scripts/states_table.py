"""Print a Markdown table of the states of one checkpoint from DIR/analysis.json (run
`crystallab analyze DIR` first): per task, the raw and chat states, n_basins, phi with phi_p,
h and valid mass, each with its interval.

    python scripts/states_table.py runs/gemma-v2 [--checkpoint base]
"""

from __future__ import annotations

import argparse

from crystallab.analysis import load_analysis


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("dir")
    ap.add_argument("--checkpoint", help="default: the root")
    args = ap.parse_args()
    an = load_analysis(args.dir)
    ck = args.checkpoint or an.root
    print(f"checkpoint {ck}; ε = {an.thresholds['eps']}, v_min = {an.thresholds['v_min']}\n")
    print("| task | ensemble | state | valid / prompts | n_basins | phi | phi_p | spread | h | valid mass |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for task in an.tasks:
        for kind in ("raw", "chat"):
            s = an.state(ck, task, kind)
            if s is None:
                continue
            p = s.params

            def t(name: str, fmt: str = ".3f") -> str:
                return p[name].text(fmt) if name in p else "n/a"

            phi_p = "n/a" if s.phi_p is None else f"{s.phi_p:.3g}"
            print(f"| {task} | {kind} | {s.state} | {s.n_valid}/{s.n_prompts} | {t('n_basins', '.0f')} | {t('phi')} | "
                  f"{phi_p} | {t('spread')} | {t('h', '.2f')} | {t('valid_mass', '.2f')} |")


if __name__ == "__main__":
    main()
