"""Condenses the per-model tables of benches/residual/table.py (markdown on stdin) into one
table per measure: a row per model, a column per configuration, for the README.

Usage: python summary.py [cosine|measure|latency] [--by-config] < table.txt
(--by-config: a row per configuration, a column per model)
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


SHORT = {"digits ViT opset 17": "digits ViT", "paraphrase-MiniLM-L3": "MiniLM-L3",
         "digits CNN opset 17": "digits CNN", "all-MiniLM-L6-v2": "MiniLM-L6", "DINOv2-S backbone": "DINOv2-S",
         "open_nsfw_resnet50_tf2onnx_opset9": "open_nsfw", "pplcnet_text_orientation_paddle_opset15": "PP-LCNet",
         "orinet_orientation_pytorch_opset17": "OriNet"}


def cell(row, what):
    if row is None:
        return ""
    if row[1].startswith("compile failed"):
        return "fails"
    if what == "latency":
        return " / ".join(row[7:10])
    return row[COLUMN[what]]


def transposed(models, configs, what):
    """A row per configuration, a column per model."""
    models = [m for m in models if not (what == "measure" and all(r[1] == "—" for r in m["rows"].values()))]
    print("| config | " + " | ".join(SHORT.get(m["name"], m["name"]) for m in models) + " |")
    print("|---|" + "---|" * len(models))
    if what == "measure":
        print("| float | " + " | ".join(m["float"] for m in models) + " |")
    for c in configs:
        print(f"| {c} | " + " | ".join(cell(m["rows"].get(c), what) for m in models) + " |")


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "cosine"
    models = parse(sys.stdin.read())
    if "--by-config" in sys.argv:
        configs = []
        for m in models:
            configs += [c for c in m["rows"] if c not in configs]
        return transposed(models, configs, what)
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
