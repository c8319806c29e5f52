"""What anonymisation costs (MAVAD paper, Table V): the same split trained and evaluated on raw
and on anonymised media, for the supervised method (AVAR-Net's head) and the weakly supervised
one (AVACA), over several seeds.

``OUT/features-raw`` and ``OUT/features-anonymized`` are two caches of the same clips with the
same extractors, the second with faces and plates covered in every step's frame before the
backbone saw it; ``OUT/runs/<media>/<method>-seed<k>`` the runs; ``privacy.json`` and
``privacy.md`` the table (mean +- std over seeds, and the change). A rerun reuses the caches
and the finished runs.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from avar.anonymize.cover import AnonymizeConfig
from avar.datasets.folders import scan
from avar.features.cache import FeatureSet, extract_dataset
from avar.files import write_json_atomic
from avar.methods.table import METHODS

MEDIA = ("raw", "anonymized")
COMPARED = ("avarnet", "avaca")
"""The methods compared (from the table of methods): the supervised head and AVACA."""


def _extract_both(data_dir: Path, out: Path, video, audio, step: float, config: AnonymizeConfig,
                  seed: int, progress: bool) -> dict[str, FeatureSet]:
    listing = scan(data_dir, seed=seed)
    caches = {}
    for media in MEDIA:
        root = out / f"features-{media}"
        summary = extract_dataset(listing.entries, root, video, audio, step=step, progress=progress,
                                  unlisted=listing.skipped, anonymize=config if media == "anonymized" else None)
        if summary.failures:
            # Both caches must hold the same clips; a clip that fails in one is a fact to report.
            write_json_atomic(out / f"failures-{media}.json", summary.failures)
        caches[media] = FeatureSet.open(root)
    ids = [{c["clip_id"] for c in caches[m].clips} for m in MEDIA]
    if ids[0] != ids[1]:
        raise RuntimeError(f"{out}: the raw and anonymised caches hold different clips; see failures-*.json")
    return caches


def _score(name: str, features: FeatureSet, run_dir: Path, seed: int, epochs: int | None) -> float:
    """The method's headline figure on the test split after training it with ``seed``."""
    result = run_dir / "result.json"
    if result.is_file():
        return json.loads(result.read_text())["score"]
    method = METHODS[name]
    method.fit(features, run_dir, method.train_config(seed=seed, **({"epochs": epochs} if epochs else {})),
               progress=False)
    value = getattr(method.evaluate(run_dir, features.root, plots=False, progress=False), method.headline[0])
    write_json_atomic(result, {"score": value})
    return value


def run_privacy_cost(data_dir: Path | str, out_dir: Path | str, video, audio, *, step: float = 1.0,
                     config: AnonymizeConfig | None = None, seeds: int = 3, epochs: int | None = None,
                     split_seed: int = 0, progress: bool = True) -> dict:
    """Extract raw and anonymised caches of ``data_dir``, train and evaluate both methods on
    each for ``seeds`` seeds; the table as a dict (also written to ``privacy.json`` / ``.md``)."""
    out = Path(out_dir)
    config = config or AnonymizeConfig()
    caches = _extract_both(Path(data_dir), out, video, audio, step, config, split_seed, progress)
    rows = []
    for method in COMPARED:
        values = {media: [_score(method, caches[media], out / "runs" / media / f"{method}-seed{k}", k, epochs)
                          for k in range(seeds)] for media in MEDIA}
        row = {"method": method, "metric": METHODS[method].headline[1]}
        for media in MEDIA:
            v = np.array([x for x in values[media] if x is not None], float)
            row[media] = {"mean": float(v.mean()) if len(v) else None, "std": float(v.std()) if len(v) else None,
                          "values": values[media]}
        if row["raw"]["mean"] is not None and row["anonymized"]["mean"] is not None:
            row["change"] = row["anonymized"]["mean"] - row["raw"]["mean"]
        rows.append(row)
    result = {"data": str(data_dir), "seeds": seeds, "anonymize": config.__dict__,
              "clips": len(caches["raw"].clips), "rows": rows}
    write_json_atomic(out / "privacy.json", result)
    (out / "privacy.md").write_text(privacy_markdown(result))
    return result


def privacy_markdown(result: dict) -> str:
    def cell(stats: dict) -> str:
        return "n/a" if stats["mean"] is None else f"{stats['mean']:.3f} +- {stats['std']:.3f}"

    lines = [f"Raw vs anonymised media ({result['clips']} clips of {result['data']}, test split, "
             f"{result['seeds']} seeds; faces: {result['anonymize']['faces']}, plates: {result['anonymize']['plates']})",
             "", "| method | metric | raw | anonymised | change |", "|---|---|---|---|---|"]
    for row in result["rows"]:
        change = f"{row['change']:+.3f}" if row.get("change") is not None else "n/a"
        lines.append(f"| {row['method']} | {row['metric']} | {cell(row['raw'])} | {cell(row['anonymized'])} | {change} |")
    return "\n".join(lines) + "\n"
