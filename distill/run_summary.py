"""The few lines a run prints at its end: teacher and student side by side, where the files went."""

from __future__ import annotations

from typing import Any


def describe_loss(loss_cfg: Any) -> str:
    """``ce 0.1 + kd 0.9 (temperature 4)``: each term with its weight, and its other options in brackets."""
    parts = []
    for name, options in dict(loss_cfg).items():
        if options is None:
            continue
        options = dict(options)
        weight = options.pop("weight", 1.0)
        extra = ", ".join(f"{key} {value}" for key, value in options.items())
        parts.append(f"{name} {weight:g}" + (f" ({extra})" if extra else ""))
    return " + ".join(parts)


def print_summary(summary: dict[str, Any]) -> None:
    lines = [f"== distill summary ({summary['stage']}) ==", f"{'model':<9}{'architecture':<24}{'params':>12}"
             f"{'test top-1':>12}"]
    for role in ("teacher", "student"):
        if role in summary:
            entry = summary[role]
            accuracy = entry.get("test_acc_top1")
            lines.append(f"{role:<9}{entry['architecture']:<24}{entry['params']:>12,}"
                         f"{(f'{accuracy:.4f}' if accuracy is not None else 'n/a'):>12}")
    if summary.get("loss"):
        lines.append(f"loss: {summary['loss']}")
    lines += [f"warning: {warning}" for warning in summary.get("warnings", [])]
    lines += scheme_lines(summary.get("scheme"))
    if summary.get("student", {}).get("note"):
        lines.append(summary["student"]["note"])
    if "teacher" in summary:
        teacher = summary["teacher"]
        origin = {True: " (in this run)", False: f" (reused from the cache: {teacher.get('cache_entry')})"}
        lines.append(f"teacher weights: {teacher['source']}{origin.get(teacher.get('trained_now'), '')}")
    for line in (summary.get("report") or {}).get("comparisons", []):
        lines.append(line)
    for row in (summary.get("compress") or {}).get("variants", []):
        lines.append(f"variant  {row['variant']:<24}{row['bytes']:>10,} B{100 * row['test_acc_top1']:>9.2f} %"
                     f"{row['latency_ms']:>9.3f} ms  {row['file']}")
    if summary.get("report"):
        lines.append(f"efficiency report: {summary['report']['files']['markdown']}")
    lines.append(f"run folder: {summary['run_dir']}")
    for command in summary.get("wandb_sync", []):
        lines.append(f"upload the offline wandb run with: {command}")
    print("\n".join(lines), flush=True)


def scheme_lines(scheme: dict[str, Any] | None) -> list[str]:
    """One line per model of a scheme (distill/schemes): links, generations, peers or ensemble members."""
    if not scheme:
        return []
    lines = [f"scheme: {scheme['method']}"]
    for link in scheme.get("links", []):
        accuracy = link.get("test_acc_top1")
        lines.append(f"  link {link['index']} {link['role']:<13}{link['architecture']:<20}"
                     f"{(f'{accuracy:.4f}' if accuracy is not None else 'n/a'):>8}  "
                     + ("trained now" if link["trained_now"] else "from the cache"))
    if "links" in scheme and not scheme["trained_now"]:
        lines.append("  nothing trained: every model came from the cache")
    for peer in scheme.get("peers", []):
        accuracy = peer.get("test_acc_top1")
        lines.append(f"  peer {peer['index']} {peer['architecture']:<20}"
                     f"{(f'{accuracy:.4f}' if accuracy is not None else 'n/a'):>8}  {peer.get('exported') or ''}")
    for index, member in enumerate(scheme.get("members", [])):
        lines.append(f"  teacher {index}: {member}")
    return lines
