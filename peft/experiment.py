"""The READ experiment runner (arXiv:2305.15348): pretrain a small encoder, then adapt it to a
generated GLUE-like task with `config.method` and each method in `config.baselines`.

Runs on the shared runtime (`train.runtime`: the mesh from `config.mesh_shape`, sharded state,
`train.loop.fit`, `finish`). Writes `metrics.jsonl` / TensorBoard events, `result.json` and
`plot.png` (training curves, via `finish`) and the per-method detail `results.json` into the
workdir, and prints one row per method: task score, trainable parameters, compiled peak
training memory and FLOPs of the update step (see `peft.finetune.compiled_cost`), step time.
"""

from __future__ import annotations

import json
import os

from peft.finetune import load_task, train_method
from peft.pretrain import pretrain_backbone
from train.runtime import Runtime, finish, is_main_process


def _methods(config) -> list[str]:
    extra = [m for m in config.baselines.split("+") if m]
    return list(dict.fromkeys([config.method] + extra))


def run(config, workdir: str) -> dict[str, float]:
    """Runs every stage; resumable (pretraining and each method checkpoint in the workdir)."""
    os.makedirs(workdir, exist_ok=True)
    rt = Runtime(config)
    writer = rt.writer(workdir)
    backbone, pre = pretrain_backbone(config, workdir, writer, runtime=rt)
    data = load_task(config, backbone)
    results = {}
    for k, method in enumerate(_methods(config)):
        offset = config.pretrain.steps + k * config.finetune.steps
        results[method] = train_method(
            config, workdir, backbone, method, data, writer, offset, runtime=rt
        )
    writer.close()

    spec = data["spec"]
    table = [
        f"task={spec.name} (metric: {spec.metric}, test n={len(data['test']['label'])}), "
        f"backbone MLM held-out acc {100 * pre['pretrain/heldout_acc']:.1f}%",
        f"{'method':<9} {'score':>7} {'trainable':>10} {'peak MiB':>9} {'MFLOP':>8} {'step ms':>8}",
    ]
    for m, r in results.items():
        table.append(
            f"{m:<9} {r['test_score']:7.2f} {r['trainable_params']:10d} "
            f"{r['peak_bytes'] / 2**20:9.2f} {r['flops'] / 1e6:8.1f} {r['step_ms']:8.2f}"
        )
    print("\n".join(table))
    if is_main_process():
        with open(os.path.join(workdir, "results.json"), "w") as f:
            json.dump({"task": spec.name, "pretrain": pre, "methods": results}, f, indent=2)

    out = {f"pretrain/{k.split('/')[-1]}": v for k, v in pre.items()}
    for m, r in results.items():
        out[f"{m}/test_score"] = r["test_score"]
        out[f"{m}/trainable_params"] = float(r["trainable_params"])
    return finish(
        workdir,
        out,
        metrics_path=writer.jsonl_path,
        plot_keys=["train/loss", "pretrain/heldout_loss"] + [f"{m}/valid_score" for m in results],
        title=f"READ on {spec.name}: {', '.join(results)}, mesh {tuple(rt.mesh.shape.values())}",
        lines=[("details", os.path.join(workdir, "results.json"))],
    )
