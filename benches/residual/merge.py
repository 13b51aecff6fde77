"""Merges runs of benches/residual/table.py (markdown files, later files override rows of the
same model and configuration), in the configuration order of the table script.

Usage: python merge.py RUN.txt... > table.txt
"""
import sys

import table
from summary import parse


def main():
    header, models = None, {}
    for path in sys.argv[1:]:
        text = open(path).read()
        header = header or "\n".join(text.splitlines()[:2])
        for m in parse(text):
            models.setdefault(m["name"], m)["rows"].update(m["rows"])
    order = [tag for tag, _ in table.CONFIGS]
    print(header + "\n")
    for m in models.values():
        print(f"### {m['name']} — {m['metric']}: float {m['float']}\n")
        print("| config | measure | cosine to float | weight bits / param | int MACs vs W8K1 | integer-only "
              "| tract = ORT | ORT seq ms | ORT parallel ms | tract ms |")
        print("|---|---|---|---|---|---|---|---|---|---|")
        for tag in sorted(m["rows"], key=lambda t: order.index(t) if t in order else len(order)):
            print("| " + " | ".join(m["rows"][tag]) + " |")
        print()


if __name__ == "__main__":
    main()
