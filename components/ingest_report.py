"""Ingest's section of the run report: the dataset and sample images of each class."""
from __future__ import annotations

import html
from typing import Any

from engine.html import png_data_uri, rows, unavailable


def _samples(examples, names: list[str], per_class: int = 6, limit: int = 2000) -> str:
    """Up to `per_class` test images of each class, inline, under the class's name."""
    from components.evaluate import test_arrays  # evaluate reads ingest's Examples: imported when drawn

    try:
        images, labels = test_arrays(examples, limit)
    except Exception as exc:  # a report never fails a run; it says what is missing instead
        return unavailable("Sample images", exc)
    lines = []
    for k in sorted(set(labels.tolist())):
        picks = images[labels == k][:per_class]
        name = html.escape(names[k] if k < len(names) else str(k))
        cells = "".join(f"<img src='{png_data_uri(img.reshape(28, 28))}' width='56' height='56' "
                        f"alt='{name} sample'>" for img in picks)
        lines.append(f"<tr><th>{k}: {name}</th><td class='samples'>{cells}</td></tr>")
    return f"<table>{''.join(lines)}</table>"


def report_section(summary: dict[str, Any], outputs) -> tuple[str, str, str]:
    """The dataset: spec, source, fingerprint, counts, schema source and sample images per class."""
    dataset = summary.get("dataset")
    counts = ", ".join(f"{s} {n:,}" for s, n in dataset["counts"].items()) if dataset else "not ingested"
    names = (summary.get("schema") or {}).get("classes") or (dataset or {}).get("classes") or []
    samples = _samples(outputs["ingest"], names) if "ingest" in outputs else "<p>Not ingested.</p>"
    facts = {"spec": dataset["spec"] if dataset else "", "source": dataset["source"] if dataset else "",
             "fingerprint": dataset["fingerprint"] if dataset else "", "examples": counts,
             "schema": (summary.get("schema") or {}).get("source", ""), "classes": ", ".join(names),
             **({"preprocessing": dataset["preprocessing"]} if dataset and dataset.get("preprocessing") else {}),
             **({"polarity": "inverted (255 - x): the source had dark ink on a light background; the serving "
                             "signatures invert their inputs the same way"} if dataset and dataset.get("inverted")
                else {})}
    return "dataset", "Dataset", f"<table>{rows(facts)}</table><h3>Samples per class (test split)</h3>{samples}"
