"""Condenses the per-model tables of benches/residual/table.py (markdown on stdin) into one
table per measure: a row per model, a column per configuration, for the README.

Usage: python summary.py [cosine|measure|latency] < table.txt
"""
import re
import sys

COLUMN = {"measure": 1, "cosine": 2}


def parse(text):
    models, current = [], None
    for line in text.splitlines():
        m = re.match(r"### (.*?) — (.*?): float (.*)", line)
        if m:
            current = {"name": m.group(1), "metric": m.group(2), "float": m.group(3), "rows": {}}
            models.append(current)
        elif current and line.startswith("| ") and not line.startswith("| config"):
            cells = [c.strip() for c in line.strip("|").split("|")]
            current["rows"][cells[0]] = cells
    return models


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "cosine"
    models = parse(sys.stdin.read())
    configs = []
    for m in models:
        configs += [c for c in m["rows"] if c not in configs]
    print("| model | " + " | ".join(configs) + " |")
    print("|---|" + "---|" * len(configs))
    for m in models:
        if what == "measure" and all(r[1] == "—" for r in m["rows"].values()):
            continue
        cells = []
        for c in configs:
            row = m["rows"].get(c)
            if row is None:
                cells.append("")
            elif row[1].startswith("compile failed"):
                cells.append("fails")
            elif what == "latency":
                cells.append(" / ".join(row[7:10]))
            else:
                cells.append(row[COLUMN[what]])
        label = m["name"] + ("" if what != "measure" else f" ({m['metric']}, float {m['float']})")
        print(f"| {label} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
